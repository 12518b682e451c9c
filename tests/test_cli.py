"""The `rsa` command: argument handling, --compare bookkeeping, reports (scripted model).

The scripted LiteLLM provider `fakellm` only exists inside this process, so these tests call
`rsa_plugins.cli.main` directly; bad-flag tests run the real `rsa` executable.  Real-model
runs of the command are in test_cli_real.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fakes import make_fake_llm
from servers import free_port
from rsa_plugins import cli, embedded, runs
from rsa_plugins.config import RSAConfig
from rsa_plugins.plot import figure
from rsa_plugins.report import summarize_trace
from rsa_plugins.trace import load

# answers in <answer> tags (reasoning-gym format), wrapped by the script in \boxed{...}
ANSWERS = ("<answer>3</answer>", "<answer>-4</answer>", "<answer>7</answer>")


def rsa_exe() -> list[str]:
    """The installed `rsa` console script next to this Python (else `python -m`)."""
    exe = Path(sys.executable).parent / "rsa"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rsa_plugins.cli"]


def run_rsa(*args: str, timeout: float = 120, drop: tuple[str, ...] = (),
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The `rsa` command in a subprocess; `drop`: environment variables it must not see."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    for name in ("RSA_DEBUG", *drop):
        env.pop(name, None)
    return subprocess.run([*rsa_exe(), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def generations(trace: Path) -> list[dict]:
    return [e for e in load(trace) if e["event"] == "generation"]


@pytest.fixture
def fake_llm():
    return make_fake_llm(answers=ANSWERS)


# ---------------------------------------------------------------------------- configs

def test_compare_gives_majority_vote_the_generations_of_rsa() -> None:
    base = RSAConfig(population=4, aggregation_size=2, steps=3, seed=5, max_tokens=99)
    methods = runs.compare_configs(base)
    assert list(methods) == ["majority_vote", "self_refine", "rsa"]
    maj, refine, rsa = methods["majority_vote"], methods["self_refine"], methods["rsa"]
    assert maj.generations_per_problem == rsa.generations_per_problem == 12
    assert (maj.population, maj.steps) == (12, 1)
    assert (refine.population, refine.aggregation_size, refine.steps) == (4, 1, 3)
    assert rsa == base
    # everything else (seed, budget, sampling) is shared
    assert {m.seed for m in methods.values()} == {5}
    assert {m.max_tokens for m in methods.values()} == {99}


def test_embedded_model_gets_small_defaults_and_flags_win() -> None:
    parser = cli.build_parser()
    small = embedded.RSA_DEFAULTS
    for argv in (["eval"], ["eval", "--model", "embedded"], ["run", "p"]):
        cfg = cli.make_config(parser.parse_args(argv))
        assert {k: getattr(cfg, k) for k in small} == small
    cfg = cli.make_config(parser.parse_args(["eval", "--task", "rg:x", "-T", "5", "-N", "6",
                                             "--temperature", "1"]))
    assert (cfg.population, cfg.steps, cfg.temperature) == (6, 5, 1.0)
    assert cfg.aggregation_size == small["aggregation_size"]
    # with a model given, RSAConfig's defaults (the paper's)
    cfg = cli.make_config(parser.parse_args(["eval", "--task", "rg:x", "--model", "openai/m"]))
    paper = RSAConfig()
    assert (cfg.population, cfg.aggregation_size, cfg.steps, cfg.max_tokens, cfg.temperature) \
        == (paper.population, paper.aggregation_size, paper.steps, paper.max_tokens,
            paper.temperature)
    cfg = cli.make_config(parser.parse_args(["run", "p", "--model", "openai/m", "-N", "2"]))
    assert (cfg.population, cfg.aggregation_size) == (2, 2)


# ---------------------------------------------------------------------------- eval / run

def test_eval_compare_runs_every_method_on_the_same_problems(fake_llm, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    rc = cli.main(["eval", "--task", "rg:basic_arithmetic", "--limit", "3", "-N", "3", "-K", "2",
                   "-T", "2", "--model", "fakellm/x", "--compare", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    methods = summary["methods"]
    assert set(methods) == {"majority_vote", "self_refine", "rsa"}
    # same generations for RSA and majority vote: by the summary and by counting the traces
    assert methods["rsa"]["generations_per_problem"] == 6
    assert methods["majority_vote"]["generations_per_problem"] == 6
    counts = {m: len(generations(out / f"trace-{m}.jsonl")) for m in methods}
    assert counts == {"majority_vote": 18, "self_refine": 18, "rsa": 18}
    assert {m: methods[m]["generations"] for m in methods} == counts
    assert sum(c["n"] for c in fake_llm.calls) == sum(counts.values())  # no hidden samples
    assert "generations per problem: rsa 6, majority vote 6" in printed
    # the same problems for every method
    ids = {m: {g["problem"] for g in generations(out / f"trace-{m}.jsonl")} for m in methods}
    assert ids["rsa"] == ids["majority_vote"] == ids["self_refine"]
    assert len(ids["rsa"]) == 3
    # self-refine shows one parent, RSA two, majority vote none
    parents = {m: {len(g["parents"]) for g in generations(out / f"trace-{m}.jsonl")
                   if g["step"] > 1} for m in methods}
    assert parents == {"majority_vote": set(), "self_refine": {1}, "rsa": {2}}
    # accuracies agree with the per-problem records
    for m in methods:
        marks = [p["correct"][m] for p in summary["problems"]]
        assert methods[m]["accuracy"] == pytest.approx(sum(map(bool, marks)) / len(marks))
    # the closing lines give each method its own time, then the whole run's
    for m in methods:
        assert methods[m]["seconds"] >= 0
        line = next(ln for ln in printed.splitlines() if ln.startswith(f"{m}: accuracy"))
        assert f"{methods[m]['generations']} generations" in line
        assert line.endswith(f"{methods[m]['seconds']:.0f} s")
    assert any(ln.startswith("total: ") and "starting the engine" in ln
               for ln in printed.splitlines())
    rows = {r["method"]: r for r in summary["compare"]}
    assert rows["single sample"]["generations_per_problem"] == 1
    first = methods["majority_vote"]["per_step"][0]
    assert rows["single sample"]["accuracy"] == pytest.approx(first["mean_accuracy"])
    for m in methods:
        assert m in printed
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_prints_the_majority_answer_and_a_table(fake_llm, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "one"
    rc = cli.main(["run", "What is 6 times 7? Put the answer in \\boxed{}.", "--model",
                   "fakellm/x", "-N", "5", "-K", "2", "-T", "3", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    last = [g for g in generations(out / "trace.jsonl") if g["step"] == 3]
    assert len(last) == 5
    top, count = Counter(g["answer"] for g in last).most_common(1)[0]
    assert f"answer: {top}" in printed
    assert f"{top} x{count}" in printed
    table = [ln.split() for ln in printed.splitlines() if ln[:1].isdigit()]
    assert [row[0] for row in table] == ["1", "2", "3"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer"] == top and summary["config"]["population"] == 5


def test_report_of_an_interrupted_trace_covers_the_finished_steps(fake_llm, tmp_path: Path) -> None:
    out = tmp_path / "full"
    assert cli.main(["eval", "--task", "rg:basic_arithmetic", "--limit", "2", "-N", "3", "-K",
                     "2", "-T", "3", "--model", "fakellm/x", "--out", str(out),
                     "--no-progress"]) == 0
    # cut the trace as a kill during step 3 leaves it: a torn last line, no results
    lines = (out / "trace.jsonl").read_text().splitlines(keepends=True)
    step2 = [i for i, ln in enumerate(lines) if '"event": "step"' in ln and '"step": 2' in ln]
    cut = tmp_path / "cut" / "trace.jsonl"
    cut.parent.mkdir()
    kept = lines[: max(step2) + 2]
    cut.write_text("".join(kept) + kept[-1][: len(kept[-1]) // 2])
    proc = run_rsa("report", str(cut))
    assert proc.returncode == 0, proc.stderr
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln[:1].isdigit()]
    # problems advance independently, so one may have finished step 3 before the other's step 2:
    # the table must show exactly the steps the kept trace finished, with their problem counts
    finished = Counter(json.loads(ln)["step"] for ln in kept if '"event": "step"' in ln)
    assert [r[0] for r in rows] == [str(t) for t in sorted(finished)]
    assert [r[1] for r in rows] == [str(finished[t]) for t in sorted(finished)]
    assert finished[1] == finished[2] == 2  # both problems reached steps 1 and 2
    done = sum(1 for ln in kept if '"event": "result"' in ln)
    assert f"incomplete run: {done}/2 problems finished" in proc.stdout
    assert (cut.parent / "report.png").read_bytes()[:4] == b"\x89PNG"  # as --help says


def test_plot_has_one_curve_per_metric_and_one_line_per_method(fake_llm, tmp_path: Path) -> None:
    out = tmp_path / "plot"
    assert cli.main(["eval", "--task", "rg:basic_arithmetic", "--limit", "2", "-N", "2", "-K",
                     "2", "-T", "2", "--model", "fakellm/x", "--compare", "--out", str(out),
                     "--no-progress"]) == 0
    rsa = summarize_trace(out / "trace-rsa.jsonl")
    acc, fmt, div = figure([rsa]).axes
    assert [ln.get_label() for ln in acc.get_lines()] == [
        "mean accuracy (pass@1)", "majority accuracy", "pass@N"]
    assert [ln.get_label() for ln in fmt.get_lines()] == ["answered", "truncated"]
    assert list(fmt.get_lines()[0].get_ydata()) == [1.0, 1.0]  # the script always answers
    assert list(fmt.get_lines()[1].get_ydata()) == [0.0, 0.0]
    assert [ln.get_label() for ln in div.get_lines()] == ["distinct answers"]
    assert list(acc.get_lines()[0].get_xdata()) == [1, 2]
    methods = [summarize_trace(out / f"trace-{m}.jsonl") for m in
               ("majority_vote", "self_refine", "rsa")]
    axes = figure(methods).axes
    assert len(axes) == 6
    assert {ax.get_title() for ax in axes} >= {"answered (share)", "truncated (share)"}
    for ax in axes:
        assert [ln.get_label() for ln in ax.get_lines()] == ["majority_vote", "self_refine", "rsa"]
    # x is generations per problem: majority vote's single point sits at RSA's last one
    maj_x = list(axes[0].get_lines()[0].get_xdata())
    rsa_x = list(axes[0].get_lines()[2].get_xdata())
    assert maj_x == [4] and rsa_x == [2, 4]


def test_report_of_a_directory_compares_its_traces(fake_llm, tmp_path: Path) -> None:
    out = tmp_path / "dir"
    assert cli.main(["eval", "--task", "rg:basic_arithmetic", "--limit", "2", "-N", "2", "-K",
                     "1", "-T", "2", "--model", "fakellm/x", "--compare", "--out", str(out),
                     "--no-progress"]) == 0
    written = (out / "report.png").read_bytes()  # rsa eval's plot
    for name in ("report-2.png", "report-3.png"):  # never overwrites: a fresh name each time
        proc = run_rsa("report", str(out))
        assert proc.returncode == 0, proc.stderr
        assert f"plot: {out / name}" in proc.stdout
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "compared:" in proc.stdout
    for m in ("majority_vote", "self_refine", "rsa", "single sample"):
        assert m in proc.stdout
    assert (out / "report.png").read_bytes() == written


# ---------------------------------------------------------------------------- bad flags

@pytest.mark.parametrize("args, needle", [
    (["eval", "--task", "rg:basic_arithmetic", "-N", "2", "-K", "3", "--model", "openai/m"],
     "-K/--aggregation-size"),
    (["run", "2+2?", "-N", "4", "-K", "0", "--model", "openai/m"], "-K/--aggregation-size"),
    (["eval", "--task", "gsm8k", "--model", "openai/m"], "unknown task 'gsm8k'"),
    (["eval", "--task", "rg:no_such_dataset", "--model", "openai/m"], "unknown task rg:no_such"),
    (["eval", "--task", "rg:basic_arith", "--model", "openai/m"],
     "unknown reasoning-gym dataset 'basic_arith' (did you mean 'basic_arithmetic'?)"),
    (["eval", "--task", "rg:product", "--answer-format", "number", "--model", "openai/m"],
     "(did you mean 'products'"),
    (["eval", "--task", "rg:basic_arithmetic", "--limit", "0", "--model", "openai/m"], "--limit"),
    (["eval", "--task", "rg:basic_arithmetic", "--bogus"], "unrecognized arguments: --bogus"),
    (["eval", "--task", "rg:basic_arithmetic", "-N", "many"], "invalid int value"),
    (["report", "no/such/trace.jsonl"], "no trace at no/such/trace.jsonl"),
    (["run", "2+2?", "--model", "hosted_vllm/m", "--api-base", "http://127.0.0.1:{port}/v1"],
     "cannot reach --api-base http://127.0.0.1:{port}/v1"),
    (["run", "2+2?", "--model", "hosted_vllm/m", "--api-base", "localhost:8000"],
     "--api-base must be an http(s) URL"),
])
def test_bad_flags_exit_nonzero_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    args = [a.format(port=port) for a in args]
    proc = run_rsa(*args, "--out", str(tmp_path / "o")) if args[0] != "report" else run_rsa(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle.format(port=port) in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "o" / "trace.jsonl").exists()


def test_unreachable_api_base_is_checked_before_any_request(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    proc = run_rsa("eval", "--task", "rg:basic_arithmetic", "--limit", "2", "--model",
                   "hosted_vllm/m", "--api-base", f"http://127.0.0.1:{port}/v1", "--out",
                   str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"rsa eval: error: cannot reach --api-base http://127.0.0.1:{port}/v1")
    assert not (tmp_path / "o").exists()


def test_list_tasks_names_reasoning_gym_datasets() -> None:
    proc = run_rsa("eval", "--list-tasks")
    assert proc.returncode == 0
    names = proc.stdout.split()
    assert "rg:basic_arithmetic" in names and all(n.startswith("rg:") for n in names)


def test_rsa_console_script_is_installed() -> None:
    assert shutil.which("rsa", path=str(Path(sys.executable).parent)), \
        "reinstall: pip install --no-deps -e ."


def test_out_dir_with_a_different_config_is_refused(fake_llm, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    args = ["eval", "--task", "rg:basic_arithmetic", "--limit", "1", "-N", "2", "-K", "2",
            "--model", "fakellm/x", "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main([*args, "-T", "1"]) == 0
    before = (tmp_path / "o" / "trace.jsonl").read_bytes()
    capsys.readouterr()
    assert cli.main([*args, "-T", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was written with other settings (N=2 K=2 T=1" in err[0]
    assert (tmp_path / "o" / "trace.jsonl").read_bytes() == before


# ---------------------------------------------------------------------------- first runs

def test_eval_without_a_task_runs_the_demo(fake_llm, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    from rsa_plugins.reasoning_gym import DEMO, NUMBER_INSTRUCTION

    out = tmp_path / "demo"
    assert cli.main(["eval", "--model", "fakellm/x", "-N", "2", "-K", "2", "-T", "2", "--out",
                     str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == f"rg:{DEMO.dataset}" and len(summary["problems"]) == DEMO.limit
    firsts = [c for c in fake_llm.calls if "---- Solution" not in c["messages"][-1]["content"]]
    assert firsts and all(c["messages"][-1]["content"].startswith("Solve the following "
                                                                  "multiplication: ")
                          and c["messages"][-1]["content"].endswith(NUMBER_INSTRUCTION)
                          for c in firsts)
    assert "the demo, products of two 1-digit numbers" in capsys.readouterr().err


def test_report_says_when_the_model_ignores_the_answer_format(tmp_path: Path) -> None:
    make_fake_llm(answers=("3", "4"))  # \\boxed{3}: no <answer> tags, so no answer
    out = tmp_path / "fmt"
    assert cli.main(["eval", "--task", "rg:basic_arithmetic", "--limit", "2", "-N", "2", "-K",
                     "2", "-T", "2", "--model", "fakellm/x", "--out", str(out),
                     "--no-progress"]) == 0
    proc = run_rsa("report", str(out / "trace.jsonl"), "--no-plot")
    assert proc.returncode == 0, proc.stderr
    table = [ln.split() for ln in proc.stdout.splitlines() if ln[:1].isdigit()]
    header = next(ln.split() for ln in proc.stdout.splitlines() if ln.startswith("step"))
    col = header.index("answered")
    assert [row[col] for row in table] == ["0/4", "0/4"]
    assert "note: the model did not follow the answer format: 8/8 generations gave no " \
           "answer" in proc.stdout


@pytest.mark.parametrize("argv, kind", [
    (["What is 6 times 7?"], "general"),  # no format of its own: ANSWER: line
    (["What is 6 times 7?", "--kind", "math"], "math"),
    (["What is 6 times 7? Put the answer in \\boxed{}."], None),  # its own format: kept
    (["What is 6 times 7?", "--no-format"], None),
])
def test_run_asks_a_free_question_for_an_answer_format(fake_llm, tmp_path: Path, argv,
                                                       kind) -> None:
    from rsa_plugins.prompts import ANSWER_FORMATS

    assert cli.main(["run", *argv, "--model", "fakellm/x", "-N", "2", "-K", "2", "-T", "2",
                     "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    users = [c["messages"][-1]["content"] for c in fake_llm.calls]
    aggregations = [u for u in users if "---- Solution" in u]
    firsts = [u for u in users if u not in aggregations]
    assert len(aggregations) == 2 and len(set(firsts)) == 1
    first = firsts[0]
    if kind is None:
        assert first == argv[0]
    else:
        assert first == f"{argv[0]}\n\nEnd your response with {ANSWER_FORMATS[kind]}."
        # the problem's own text quoted, and the aggregation prompt's closing request
        assert all(a.count(ANSWER_FORMATS[kind]) == 2 for a in aggregations)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["prompt"] == first and summary["answer"] in summary["votes"]
