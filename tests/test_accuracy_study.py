"""The accuracy study (integrations/accuracy): statistics, tables and plots on synthetic output,
trace collection, bad arguments, and the commands of docs/results.md on the real SmolLM2
(the study's study.py and analyze.py commands, writing runs/accuracy-cpu160 and docs/results
there, are run shrunk into a temporary directory; the GPU command is dry-run)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rsa_plugins.tasks import reasoning_gym_problems

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"


def _module(name: str):
    path = ROOT / "integrations" / "accuracy" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"accuracy_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = _module("study")
analyze = _module("analyze")


# ---------------------------------------------------------------------------- statistics

def wilson_closed_form(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson interval written as (2k + z^2 -/+ z sqrt(z^2 + 4k(n-k)/n)) / (2(n + z^2))."""
    root = z * math.sqrt(z * z + 4 * k * (n - k) / n)
    return (2 * k + z * z - root) / (2 * (n + z * z)), (2 * k + z * z + root) / (2 * (n + z * z))


@pytest.mark.parametrize("k,n", [(8, 10), (0, 20), (20, 20), (37, 150), (1, 3)])
def test_wilson_matches_the_closed_form(k: int, n: int) -> None:
    lo, hi = analyze.wilson(k, n)
    want_lo, want_hi = wilson_closed_form(k, n)
    assert lo == pytest.approx(max(0.0, want_lo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, want_hi), abs=1e-12)
    assert lo <= k / n <= hi


def test_wilson_of_8_in_10_is_the_textbook_interval() -> None:
    lo, hi = analyze.wilson(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)


@pytest.mark.parametrize("k,n,name", [(3, 0, "n"), (5, 4, "k"), (-1, 4, "k")])
def test_wilson_names_the_bad_count(k: int, n: int, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        analyze.wilson(k, n)


def test_paired_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    a = [1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1]
    b = [0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0]
    first = analyze.paired_bootstrap(a, b, resamples=2000, seed=3)
    assert analyze.paired_bootstrap(a, b, resamples=2000, seed=3) == first
    # another seed draws other resamples (fractional data: the percentiles move)
    x = [0.1 * i + 0.013 * i * i for i in range(15)]
    y = [0.05 * i for i in range(15)]
    assert analyze.paired_bootstrap(x, y, 500, seed=1) != analyze.paired_bootstrap(x, y, 500, 2)
    mean, lo, hi = first
    assert mean == pytest.approx((sum(a) - sum(b)) / len(a))
    assert lo <= mean <= hi
    assert analyze.paired_bootstrap(a, a, resamples=500) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        analyze.paired_bootstrap(a, b[:-1])


def test_bootstrap_interval_narrows_with_more_problems() -> None:
    small = analyze.bootstrap_ci([1, 0] * 10, seed=1)
    large = analyze.bootstrap_ci([1, 0] * 200, seed=1)
    assert small[0] < large[0] <= 0.5 <= large[1] < small[1]


# ---------------------------------------------------------------------------- tables, plots

def synthetic_study(n: int = 20) -> dict:
    """Two tasks; on 'easy' RSA is always right and the baselines half the time; on 'hard'
    every method is right on the same 5 problems; single samples are right 1 time in 4."""
    problems = []
    for task in ("easy", "hard"):
        for i in range(n):
            if task == "easy":
                base, rsa = i % 2, 1
            else:
                base = rsa = int(i < 5)
            run = lambda final, pop: {"final": final, "finished": True, "answer": "1",  # noqa: E731
                                      "steps": [pop, pop], "majority": [final, final]}
            problems.append({"id": f"{task}-{i}", "task": task, "target": "1", "methods": {
                "majority_vote": {"final": base, "finished": True, "answer": "1",
                                  "steps": [[1, 0, 0, 0]], "majority": [base]},
                "self_refine": run(base, [base, 0]),
                "rsa": run(rsa, [rsa, rsa])}})
    stats = {"generations": 4 * 2 * n, "completion_tokens": 1000, "prompt_tokens": 5000,
             "seconds": 1.0}
    return {"model": "synthetic", "tasks": {"easy": {}, "hard": {}}, "problems": problems,
            "configs": {"rsa": {"population": 2, "aggregation_size": 2, "steps": 2,
                                "max_tokens": 16, "temperature": 0.7}},
            "methods": {m: stats for m in ("majority_vote", "self_refine", "rsa")}}


def test_accuracy_and_paired_tables_from_synthetic_output() -> None:
    text = analyze.markdown(synthetic_study())
    lo, hi = analyze.wilson(20, 20)
    assert f"| easy | RSA | 100.0 [{100 * lo:.1f}, {100 * hi:.1f}] | 100.0 | 20 |" in text
    lo, hi = analyze.wilson(10, 20)
    assert f"| easy | majority vote @ N*T | 50.0 [{100 * lo:.1f}, {100 * hi:.1f}] | - | 20 |" \
        in text
    assert "| easy | self-refine (K=1) | 50.0 [" in text and "| 25.0 | 20 |" in text
    assert re.search(r"\| easy \| single sample \| 25\.0 \[25\.0, 25\.0\] \| - \| 20 \|", text)
    # pooled row: 40 problems
    assert "| all tasks | RSA | 62.5 [" in text and "| 40 |" in text
    paired = {ln.split(" | ")[0].strip("| "): ln for ln in text.splitlines()
              if ln.startswith("| ") and "−" not in ln and "[" in ln and "method" not in ln
              and ln.count("[") == 3}
    # easy: RSA beats majority vote by 50 points on paired problems, significantly (*)
    assert paired["easy"].startswith("| easy | +50.0 [") and " *" in paired["easy"]
    # hard: identical outcomes, so the paired difference is exactly 0 with a zero-width CI
    assert "| hard | +0.0 [+0.0, +0.0] |" in paired["hard"]
    assert "RSA − majority vote @ N*T" in text


def test_step_curves_follow_the_populations() -> None:
    problems = [p for p in synthetic_study()["problems"] if p["task"] == "easy"]
    curves = analyze.step_curves(problems, "self_refine")
    assert curves["mean_accuracy"] == [0.25, 0.25]
    assert curves["pass_at_n"] == [0.5, 0.5]
    assert curves["majority_accuracy"] == [0.5, 0.5]


def test_analyze_command_writes_tables_and_small_plots(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "study.json").write_text(json.dumps(synthetic_study()))
    plots = tmp_path / "plots"
    assert analyze.main([str(run), "--plots", str(plots), "--name", "syn"]) == 0
    out = capsys.readouterr().out
    assert "| easy | RSA | 100.0" in out and "| rsa | 4 | 1,000 | 5,000 | 6 | 1 |" in out
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == ["syn-easy.png", "syn-hard.png"]
    assert all(2_000 < (plots / n).stat().st_size < 150_000 for n in pngs)
    assert analyze.main([str(tmp_path / "missing")]) == 2
    assert "no study.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------- study driver

def test_per_problem_reads_members_majority_and_final(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    events = [
        {"event": "run", "config": {}},
        {"event": "generation", "problem": "p", "step": 1, "slot": 0, "score": 1.0, "error": None},
        {"event": "generation", "problem": "p", "step": 1, "slot": 1, "score": None,
         "error": "timeout"},
        {"event": "generation", "problem": "p", "step": 1, "slot": 1, "score": 0.4, "error": None},
        {"event": "step", "problem": "p", "step": 1, "metrics": {"majority_accuracy": 1.0}},
        {"event": "generation", "problem": "p", "step": 2, "slot": 0, "score": 0.0, "error": None},
        {"event": "generation", "problem": "p", "step": 2, "slot": 1, "score": None,
         "error": "boom"},
        {"event": "step", "problem": "p", "step": 2, "metrics": {"majority_accuracy": 0.0}},
        {"event": "result", "problem": "p", "answer": "7", "correct": False},
    ]
    trace.write_text("".join(json.dumps(e) + "\n" for e in events))
    got = study.per_problem(trace)["p"]
    # partial credit (0.4) and failed generations count as wrong; the retry replaced the failure
    assert got == {"final": 0, "finished": True, "answer": "7", "steps": [[1, 0], [0, 0]],
                   "majority": [1, 0]}


def test_estimate_counts_every_methods_generations() -> None:
    args = study.parse_args(["--out", "x", "-N", "8", "-K", "4", "-T", "4", "--max-tokens",
                             "100"])
    plan = study.estimate(study.method_configs(study.base_config(args)), problems=10)
    assert plan["generations"] == {"majority_vote": 320, "self_refine": 320, "rsa": 320}
    assert plan["total_generations"] == 960 and plan["max_generated_tokens"] == 96_000


@pytest.mark.parametrize("flags,message", [
    (["-K", "9"], "-K: aggregation_size must be between 1 and population (4), got 9"),
    (["--limit", "0"], "--limit must be >= 1, got 0"),
    (["--tasks", "no_such_set"], "--tasks: no_such_set: unknown reasoning-gym dataset"),
    (["--tasks", ","], "--tasks: name at least one"),
    (["--max-tokens", "0"], "--max-tokens: max_tokens must be >= 1, got 0"),
])
def test_bad_arguments_end_with_one_line_naming_the_flag(flags, message, tmp_path, capsys):
    assert study.main(["--out", str(tmp_path / "o"), "--dry-run", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("study: error: ") and message in err
    assert not (tmp_path / "o").exists()


def test_unreachable_server_ends_with_one_line(tmp_path: Path, capsys) -> None:
    argv = ["--out", str(tmp_path / "o"), "--tasks", "gcd", "--limit", "1", "--model",
            "openai/x", "--api-base", "http://127.0.0.1:9/v1"]
    assert study.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("study: error: cannot reach --api-base http://127.0.0.1:9/v1")
    assert len(err.strip().splitlines()) == 1


def test_engine_args_parse_json_values() -> None:
    assert study.engine_options(["enforce_eager=true", "max_model_len=4096", "dtype=half"]) == {
        "enforce_eager": True, "max_model_len": 4096, "dtype": "half"}
    with pytest.raises(study.StudyError, match="KEY=VALUE"):
        study.engine_options(["oops"])


def test_study_tasks_have_numeric_answers_and_lenient_format() -> None:
    for name, config in study.TASKS.items():
        problems = reasoning_gym_problems(name, 5, 0, "number", **config)
        assert all(p.kind == "math" for p in problems)
        assert all(re.fullmatch(r"-?\d+", str(p.target)) for p in problems), name
        assert all(p.prompt.endswith("Give the final answer as a number.") for p in problems)
        # the gold answer as the last number of a sloppy completion scores 1.0
        p = problems[0]
        from rsa_plugins.answers import extract

        answer = extract(f"Let me see. The result is {p.target}.", p.kind)
        assert p.scorer(answer, "", p) == 1.0


def test_number_format_is_an_option_and_tags_stay_the_default() -> None:
    tags = reasoning_gym_problems("chain_sum", 2, 0)
    assert tags[0].kind == "reasoning_gym" and "<answer>" in tags[0].prompt
    assert tags[0].answer_format == "the final answer between <answer> and </answer> tags"
    number = reasoning_gym_problems("chain_sum", 2, 0, answer_format="number")
    assert number[0].answer_format == "the final answer as a number"
    with pytest.raises(ValueError, match="answer_format must be one of tags, number"):
        reasoning_gym_problems("chain_sum", 2, 0, answer_format="boxed")


# ---------------------------------------------------------------------------- docs/results.md

def doc_commands() -> list[tuple[bool, list[str]]]:
    """(gpu_only, argv) of every `python integrations/accuracy/...` command in docs/results.md."""
    text = DOC.read_text()
    found = []
    for m in re.finditer(r"(<!-- gpu-only:[^>]*-->\s*)?```bash\n(.*?)```", text, re.S):
        for cmd in m.group(2).replace("\\\n", " ").splitlines():
            if cmd.strip().startswith("python integrations/accuracy/"):
                found.append((m.group(1) is not None, shlex.split(cmd)))
    return found


def test_results_doc_shows_the_pilot_and_gpu_commands() -> None:
    cmds = doc_commands()
    scripts = [(gpu, argv[1].rsplit("/", 1)[1]) for gpu, argv in cmds]
    assert (False, "study.py") in scripts and (False, "analyze.py") in scripts
    assert (True, "study.py") in scripts
    text = DOC.read_text()
    assert "## The study" in text and "GPU run" in text


def test_gpu_command_plans_under_the_token_budget() -> None:
    """The documented GPU study, dry-run: plan and estimate only (no model is loaded)."""
    for gpu, argv in doc_commands():
        if gpu and argv[1].endswith("study.py"):
            args = study.parse_args([*argv[2:], "--dry-run"])
            plan = study.estimate(study.method_configs(study.base_config(args)),
                                  len(study.task_list(args.tasks)) * args.limit)
            assert len(study.task_list(args.tasks)) >= 3 and args.limit >= 100
            # generated tokens at 60 per generation (pilot's mean: 48, see the docs) stay under 4M
            assert plan["total_generations"] * 60 < 4_000_000
            proc = subprocess.run([sys.executable, *argv[1:], "--dry-run"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            assert f"total: {plan['total_generations']:,} generations" in proc.stdout


@pytest.mark.real
def test_documented_pilot_commands_run_on_the_real_model(smollm2_dir: Path, tmp_path: Path):
    """The pilot's commands from docs/results.md, shrunk (later flags win in argparse) to
    1 task x 2 problems, N=2 K=2 T=2, 16 tokens, through the embedded SmolLM2."""
    out, plots = tmp_path / "run", tmp_path / "plots"
    small = ["--tasks", "basic_arithmetic", "--limit", "2", "-N", "2", "-K", "2", "-T", "2",
             "--max-tokens", "16", "--out", str(out), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    pilot = [argv for gpu, argv in doc_commands() if not gpu]
    run_study = next(a for a in pilot if a[1].endswith("study.py"))
    proc = subprocess.run([sys.executable, *run_study[1:], *small], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "total: 24 generations, at most 384 generated tokens" in proc.stdout
    assert "projected study total" in proc.stderr  # progress lines
    data = json.loads((out / "study.json").read_text())
    assert [p["id"] for p in data["problems"]] == ["basic_arithmetic-0-0", "basic_arithmetic-0-1"]
    for p in data["problems"]:
        m = p["methods"]
        assert [len(s) for s in m["majority_vote"]["steps"]] == [4]
        assert [len(s) for s in m["rsa"]["steps"]] == [2, 2]
        assert [len(s) for s in m["self_refine"]["steps"]] == [2, 2]
        assert all(m[k]["finished"] for k in m)
    for method in ("majority_vote", "self_refine", "rsa"):
        stats = data["methods"][method]
        assert stats["generations"] == 8 and 0 < stats["completion_tokens"] <= 8 * 16
    run_analyze = next(a for a in pilot if a[1].endswith("analyze.py"))
    argv = [str(out) if a.startswith("runs/") else a for a in run_analyze[1:]]
    proc = subprocess.run([sys.executable, *argv, "--plots", str(plots)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| basic_arithmetic | RSA |" in proc.stdout
    assert len(list(plots.glob("*-basic_arithmetic.png"))) == 1
