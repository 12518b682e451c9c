"""Spending less through the entry points that reach a server: the `rsa` command and lm-eval's
`rsa-litellm` (Inspect: test_inspect.py; DSPy: test_dspy.py).  Each run is checked against
`agree_stub`'s record of the generations it really made: a run never exceeds its budget, says
where and why its problems stopped, and prints its worst case before the first call."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import rsa_plugins
from agree_stub import AgreeServer
from rsa_plugins import ConfigError, cli
from rsa_plugins.reasoning_gym import TaskSpec
from rsa_plugins.trace import load

N, K, T = 4, 2, 5
RSA = str(Path(sys.executable).parent / "rsa")


def agree_problems(spec: dict[str, int]) -> list[rsa_plugins.Problem]:
    return [rsa_plugins.Problem(f"Problem {name} agrees from step {k}. Put the answer in "
                                "\\boxed{}.", id=name, target="42") for name, k in spec.items()]


@pytest.fixture(scope="module")
def server():
    with AgreeServer() as s:
        yield s


def model_flags(server: AgreeServer) -> list[str]:
    return ["--model", "hosted_vllm/agree", "--api-base", server.base_url, "-N", str(N),
            "-K", str(K), "-T", str(T), "--max-tokens", "64", "--no-progress"]


# ------------------------------------------------------------------ rsa run / rsa eval


def test_rsa_run_stops_where_the_answers_agree_and_says_so(server, tmp_path):
    before = len(server.stats())
    out = tmp_path / "run"
    proc = subprocess.run(
        [RSA, "run", "Problem r2 agrees from step 2. Put the answer in \\boxed{}.",
         *model_flags(server), "--early-stop", "unanimous", "--budget-generations", "19",
         "--out", str(out)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert proc.returncode == 0, proc.stderr
    made = server.stats()[before:]
    assert Counter(step for _, step in made) == {1: N, 2: N}  # stopped after step 2
    assert "answer: 42" in proc.stdout
    assert f"stopped after step 2 of {T}: unanimous ({N * (T - 2)} generations not made)" \
        in proc.stdout
    err = proc.stderr.splitlines()
    forecast = [i for i, line in enumerate(err) if line.startswith("rsa: 1 problem(s)")]
    first_step = [i for i, line in enumerate(err) if "step 1/5 done" in line]
    assert len(forecast) == 1 and forecast[0] < first_step[0], proc.stderr
    assert f"x N={N} x T={T}: at most {N * T} calls" in err[forecast[0]]
    assert err[forecast[0]].endswith("budget: 19 calls; early stop: unanimous")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == {"step": 2, "reason": "unanimous"}
    report = subprocess.run([RSA, "report", str(out / "trace.jsonl"), "--no-plot"],
                            capture_output=True, text=True, timeout=120)
    assert "1 of 1 problems stopped early: unanimous after step 2 (1)" in report.stdout


def test_rsa_eval_keeps_to_its_budget_and_reports_every_stop(server, tmp_path, monkeypatch,
                                                             capsys):
    spec = {"u1": 1, "u2": 1, "s1": 0, "s2": 0}  # two agree at once, two never
    monkeypatch.setattr(TaskSpec, "problems", lambda self, limit=None, seed=0:
                        agree_problems(spec)[:limit])
    budget = len(spec) * N * T // 2
    before = len(server.stats())
    out = tmp_path / "eval"
    rc = cli.main(["eval", "--task", "rg:basic_arithmetic", "--limit", "4", *model_flags(server),
                   "--early-stop", "unanimous", "--budget-generations", str(budget),
                   "--out", str(out)])
    assert rc == 0
    made = server.stats()[before:]
    assert len(made) <= budget
    steps = {name: {s for n, s in made if n == name} for name in spec}
    assert steps["u1"] == steps["u2"] == {1}
    summary = json.loads((out / "summary.json").read_text())
    rsa = summary["methods"]["rsa"]
    assert rsa["generations"] == len(made)
    assert rsa["stopped"]["unanimous"] == 2 and rsa["stopped"]["budget"] >= 1
    stops = {p["id"]: p["stopped"]["rsa"] for p in summary["problems"]}
    assert stops["u1"] == stops["u2"] == {"step": 1, "reason": "unanimous"}
    for name in ("s1", "s2"):  # a split problem ends for the budget, or after step T
        assert stops[name] is None and max(steps[name]) == T or \
            stops[name] == {"step": max(steps[name]), "reason": "budget"}
    assert all(p["answers"]["rsa"] is not None for p in summary["problems"])
    captured = capsys.readouterr()
    assert f"4 problem(s) x N={N} x T={T}: at most {4 * N * T} calls" in captured.err
    assert f"budget: {budget} calls; early stop: unanimous" in captured.err
    assert "problems stopped early: unanimous after step 1 (2)" in captured.out
    for t in range(1, max(s for _, s in made) + 1):  # a line per step, stopped problems apart
        assert f"[rsa] step {t}/{T} done" in captured.err, t
    results = [e for e in load(out / "trace.jsonl") if e["event"] == "result"]
    assert {e["problem"]: e["stopped"] for e in results} == stops


@pytest.mark.parametrize("args, needle", [
    (["--early-stop", "unanimus"], "argument --early-stop: invalid choice: 'unanimus'"),
    (["--early-stp", "unanimous"], "unrecognized arguments: --early-stp"),
    (["--early-stop-patience", "0"], "--early-stop-patience: early_stop_patience must be >= 1"),
    (["--early-stop-confidence", "1.5"], "--early-stop-confidence: early_stop_confidence must "
                                         "be between 0.5 and 1"),
    (["--budget-generations", "0"], "--budget-generations: budget_generations must be >= 1"),
    (["--budget-tokens", "many"], "argument --budget-tokens: invalid int value"),
    (["--budget-usd", "-1"], "--budget-usd: budget_usd must be >= 0"),
    (["--islands", "3", "-N", "12", "-K", "2"], "--islands: islands must be a power of 2"),
    (["--compare", "--budget-generations", "100"], "drop --budget-* or --compare"),
])
def test_bad_spending_flags_are_one_line(args, needle, tmp_path):
    proc = subprocess.run([RSA, "eval", "--task", "rg:basic_arithmetic", "--model", "openai/x",
                           *args, "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_budget_usd_for_a_model_without_a_price_is_one_line(server, tmp_path, capsys):
    before = len(server.stats())
    rc = cli.main(["run", "Problem x agrees from step 1.", *model_flags(server),
                   "--budget-usd", "1", "--out", str(tmp_path / "o")])
    assert rc == 2 and len(server.stats()) == before
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "rsa run: error: --budget-usd: budget_usd: no price is known for the model "
        "'hosted_vllm/agree'"), lines


def test_rsa_report_what_if_on_a_full_trace(server, tmp_path, capsys):
    """docs/spending-less.md: run the full schedule once, then replay it under rules."""
    spec = {"a1": 1, "a2": 2, "a3": 3, "never": 0}
    trace = tmp_path / "full" / "trace.jsonl"
    rsa_plugins.run(agree_problems(spec), model="hosted_vllm/agree", api_base=server.base_url,
                    population=N, aggregation_size=K, steps=T, max_tokens=64, progress=False,
                    trace=trace)
    png = tmp_path / "whatif.png"
    rc = cli.main(["report", str(trace), "--what-if", "early_stop=unanimous",
                   "--what-if", "sweep", "--png", str(png)])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    cells = [re.split(r"\s{2,}", ln) for ln in lines if ln.strip()]
    head = next(c for c in cells if c[0] == "rule")
    rows = {c[0]: dict(zip(head, c)) for c in cells[cells.index(head) + 1:] if len(c) > 2}
    saved = N * sum(T - k for k in spec.values() if k)  # 36 of 80
    assert rows["full run (never)"]["saved_gen"] == "0 (0%)"
    assert rows["unanimous"]["saved_gen"] == f"{saved} ({saved / (len(spec) * N * T):.0%})"
    assert rows["unanimous"]["gen/problem"] == f"{N * T - saved / len(spec):.1f}"
    assert rows["unanimous"]["changed"] == "0/4" and rows["unanimous"]["accuracy"] == "0.750"
    assert rows["unanimous"]["stopped at step (problems)"] == "1:1 2:1 3:1"
    assert "consensus, confidence 0.95" in rows and "unanimous, patience 2" in rows
    assert png.is_file() and lines[-1] == f"plot: {png}"


# ------------------------------------------------------------------ Python API


def test_python_api_budget_usd_on_a_priced_model(server, capsys):
    import litellm

    price = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
             "litellm_provider": "hosted_vllm", "mode": "chat"}
    litellm.register_model({"hosted_vllm/agree": price})
    try:
        full = rsa_plugins.run(agree_problems({"p": 0}), model="hosted_vllm/agree",
                               api_base=server.base_url, population=N, aggregation_size=K,
                               steps=T, max_tokens=64, use_n=False, progress=False)
        def cost(r):
            return r.usage.prompt_tokens * 1e-6 + r.usage.completion_tokens * 2e-6

        limit = cost(full[0]) / 2
        [half] = rsa_plugins.run(agree_problems({"p": 0}), model="hosted_vllm/agree",
                                 api_base=server.base_url, population=N, aggregation_size=K,
                                 steps=T, max_tokens=64, use_n=False, progress=False,
                                 budget_usd=limit)
    finally:
        litellm.model_cost.pop("hosted_vllm/agree", None)
    assert cost(half) <= limit
    assert half.stopped is not None and half.stopped.reason == "budget"
    assert half.answer is not None
    line = capsys.readouterr().err
    assert f"1 problem(s) x N={N} x T={T}: at most {N * T} calls" in line
    assert f"; budget: ${limit:,.4f}" in line


@pytest.mark.parametrize("options, word", [
    (dict(early_stop="sometimes"), "early_stop must be one of never, unanimous, consensus"),
    (dict(early_stp="unanimous"), "unknown option 'early_stp' (did you mean 'early_stop'?)"),
    (dict(budget_generation=10), "did you mean 'budget_generations'"),
    (dict(budget_tokens=0), "budget_tokens must be >= 1"),
])
def test_python_api_bad_spending_options(options, word):
    with pytest.raises(ConfigError) as err:
        rsa_plugins.run("q", model="hosted_vllm/x", api_base="http://127.0.0.1:9/v1", **options)
    assert word in str(err.value)


# ------------------------------------------------------------------ lm-eval

TASK_YAML = """
task: {name}
custom_dataset: !function utils.{name}
output_type: generate_until
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_target: "42"
process_results: !function utils.process_results
generation_kwargs: {{until: ["Question:"], do_sample: true, temperature: 1.0, max_gen_toks: 64}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
metadata: {{version: 1.0}}
"""
TASK_UTILS = """
import datasets
from rsa_plugins.answers import extract

def rows(*spec):
    qs = [f"Problem {n} agrees from step {k}. Put the answer in \\\\boxed{{}}." for n, k in spec]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{"question": q} for q in qs])})

def agree_a(**_):
    return rows(("a1", 1), ("s1", 0))

def agree_b(**_):
    return rows(("a2", 2), ("s2", 0))

def process_results(doc, results):
    return {"exact_match": float(extract(results[0], "math") == "42")}
"""


@pytest.fixture
def agree_tasks(tmp_path):
    folder = tmp_path / "agree_tasks"
    folder.mkdir()
    for name in ("agree_a", "agree_b"):
        (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name))
    (folder / "utils.py").write_text(TASK_UTILS)
    return folder


def test_lm_eval_shares_one_budget_across_tasks(server, agree_tasks, tmp_path, capsys):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from rsa_plugins.adapters.lm_eval import register

    register()
    budget = 40  # the four problems need 80 in full, 52 with the early stop
    before = len(server.stats())
    results = lm_eval.simple_evaluate(
        model="rsa-litellm",
        model_args={"model": "hosted_vllm/agree", "api_base": server.base_url, "population": N,
                    "aggregation_size": K, "steps": T, "budget_generations": budget,
                    "early_stop": "unanimous", "progress": False,
                    "trace": str(tmp_path / "run.jsonl")},
        tasks=["agree_a", "agree_b"], bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(agree_tasks), include_defaults=False))
    made = server.stats()[before:]
    assert len(made) <= budget
    steps = {name: {s for n, s in made if n == name} for name in ("a1", "a2", "s1", "s2")}
    assert steps["a1"] == {1} and steps["a2"] == {1, 2}  # unanimous problems stop there
    runs = results["config"]["rsa"]["runs"]
    assert sorted(r["task"] for r in runs) == ["agree_a", "agree_b"]
    assert sum(r["generations"] for r in runs) == len(made)
    stopped = sum((Counter(r["stopped"]) for r in runs), Counter())
    assert stopped == {"unanimous": 2, "budget": 1}  # one split problem ran out of budget
    for task, agreeing, split in (("agree_a", "a1", "s1"), ("agree_b", "a2", "s2")):
        ends = {e["problem"]: e["stopped"] for e in load(tmp_path / f"run.{task}.jsonl")
                if e["event"] == "result"}
        assert ends[f"{task}/0"] == {"step": int(agreeing[1]), "reason": "unanimous"}
        assert ends[f"{task}/1"] in (None, {"step": max(steps[split]), "reason": "budget"})
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("rsa: ")]
    assert len(lines) == 1  # one line for the whole lm-eval run, not one per task
    assert lines[0].startswith(f"rsa: 4 problem(s) x N={N} x T={T}: at most {4 * N * T} calls")
    assert lines[0].endswith(f"; budget: {budget} calls; early stop: unanimous")


@pytest.mark.parametrize("args, word", [
    (dict(early_stop="unanimus"), "early_stop must be one of never, unanimous, consensus"),
    (dict(early_stp="unanimous"), "unknown model_args key 'early_stp' (did you mean "
                                  "'early_stop'?)"),
    (dict(early_stop_confidence=0.2), "early_stop_confidence must be between 0.5 and 1"),
    (dict(budget_generations=0), "budget_generations must be >= 1"),
    (dict(islands=3), "islands must be"),
])
def test_lm_eval_bad_spending_model_args(args, word):
    from rsa_plugins.adapters.lm_eval.litellm import RSALiteLLM

    with pytest.raises(ConfigError) as err:
        RSALiteLLM(model="hosted_vllm/x", api_base="http://127.0.0.1:9/v1", **args)
    assert word in str(err.value)
