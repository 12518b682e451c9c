"""Issue 14's other items, through the stock ``lm_eval`` and ``inspect`` commands, on copied
lm-eval task files (``task_suites.py``) and the format stub (``format_stub.py``).

- ``rsa-litellm`` fits aggregation prompts into a server's context (none rejected);
- unknown ``--model_args`` / ``-S`` keys are one clear line with a suggestion, no traceback,
  and nothing undocumented reaches the request body;
- ``--use_cache`` never hands back answers made with other RSA settings;
- a trace file is keyed by task: re-running a subset of tasks resumes;
- one start-up line with the number of model calls, and a warning for repeated documents;
- a run whose every request failed ends with one line, no traceback, sessions closed.

Each ``lm_eval`` run indexes every shipped task first (~25-45 s here); runs are kept few.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from format_stub import FormatStub
from task_suites import lm_eval, make_suite

INSPECT_BIN = str(Path(sys.executable).parent / "inspect")
INSPECT_TASKS = str(Path(__file__).resolve().parent / "inspect_suites.py")


def rsa_args(stub: FormatStub, **extra: Any) -> str:
    args = {"model": f"hosted_vllm/{stub.model}", "api_base": stub.base_url, **extra}
    return ",".join(f"{k}={v}" for k, v in args.items())


def trace_events(folder: Path) -> list[dict[str, Any]]:
    """Every event of every trace file under `folder` (however the files are named)."""
    events = []
    for f in sorted(folder.rglob("*.jsonl")):
        events += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return events


def error_lines(stderr: str, *words: str) -> list[str]:
    """stderr lines that contain every one of `words`."""
    return [line for line in stderr.splitlines() if all(w in line for w in words)]


# ------------------------------------------------------------------ context fitting


def test_rsa_litellm_fits_aggregation_prompts_into_the_server_context(tmp_path):
    """Long candidates, a server that enforces a 900-token context: every aggregation
    prompt must be fitted (budget lowered, candidates cut to their tails), none rejected."""
    n, k, max_gen, limit, docs = 2, 2, 300, 900, 2
    suite = make_suite("gsm8k", tmp_path, docs=docs)
    trace = tmp_path / "trace" / "run.jsonl"
    with FormatStub(max_model_len=limit, pad_words=200) as stub:
        run = lm_eval(["--model", "rsa-litellm", "--model_args",
                       rsa_args(stub, population=n, aggregation_size=k, steps=2,
                                max_gen_toks=max_gen, trace=trace),
                       "--tasks", suite.name, "--include_path", str(suite.include_path),
                       "--apply_chat_template"], tmp_path, "out")
        stats, log = stub.stats(), stub.log()
    events = trace_events(trace.parent)
    fitted = [e["metrics"].get("fitted_prompts") for e in events
              if e.get("event") == "step" and e.get("step") == 2]
    print(f"\nstub: {stats}; step-2 fitted_prompts per problem: {fitted}")
    # the set-up really needs fitting: the first step's prompt plus K full candidates and the
    # generation budget exceed the context
    served = [e for e in log if e["status"] == 200]
    first_prompt = min(e["prompt_tokens"] for e in served)
    reply = max(len(e["reply"].split()) for e in served)
    assert first_prompt + k * reply + max_gen > limit, (first_prompt, reply)

    assert stats["rejected"] == 0, [e for e in log if e["status"] != 200][0]
    assert run.returncode == 0, run.stderr[-3000:]
    step2 = [e for e in events if e.get("event") == "generation" and e.get("step") == 2]
    assert len(step2) == docs * n
    assert all(e["error"] is None for e in step2), [e["error"] for e in step2]


# ------------------------------------------------------------------ unknown arguments


@pytest.mark.parametrize("key, suggestion", [("populaton=5", "population"), ("foo=1", None)])
def test_unknown_model_args_key_is_one_clear_line(key, suggestion, tmp_path):
    suite = make_suite("gsm8k-cot", tmp_path, docs=1)
    with FormatStub() as stub:
        run = lm_eval(["--model", "rsa-litellm", "--model_args",
                       rsa_args(stub, population=2, aggregation_size=2, steps=1) + "," + key,
                       "--tasks", suite.name, "--include_path", str(suite.include_path),
                       "--apply_chat_template"], tmp_path, "out")
        log = stub.log()
    name = key.split("=")[0]
    reached = [e["body"] for e in log if name in e["body"]]
    assert not reached, f"{name} reached the request body: {reached[0]}"
    assert run.returncode != 0, f"{key} was accepted (exit 0)"
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = error_lines(run.stderr, name, *(suggestion,) if suggestion else ())
    assert len(lines) >= 1, run.stderr[-3000:]
    if suggestion:
        assert any(f"{suggestion}" in line.replace(name, "") for line in lines), lines


def test_unknown_inspect_solver_argument_is_one_clear_line(tmp_path):
    with FormatStub() as stub:
        env = {**os.environ, "STUB_BASE_URL": stub.base_url, "STUB_API_KEY": "stub-key"}
        proc = subprocess.run(
            [INSPECT_BIN, "eval", f"{INSPECT_TASKS}@writing", "--solver", "rsa_plugins/rsa",
             "-S", "populaton=5", "-S", "aggregation_size=2", "--model", "openai-api/stub/stub",
             "--log-dir", str(tmp_path / "logs"), "--display", "plain"],
            env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        requests = stub.stats()["requests"]
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert requests == 0
    assert "Traceback" not in out, out[-3000:]
    lines = [line for line in out.splitlines()
             if "populaton" in line and "population" in line.replace("populaton", "")]
    assert lines, out[-3000:]


# ------------------------------------------------------------------ --use_cache


def test_use_cache_never_returns_answers_made_with_other_rsa_settings(tmp_path):
    suite = make_suite("gsm8k-cot", tmp_path, docs=2)
    cache = tmp_path / "cache" / "rsa"
    with FormatStub() as stub:
        def run(population: int, name: str) -> tuple[Any, int]:
            stub.reset()
            out = lm_eval(["--model", "rsa-litellm", "--model_args",
                           rsa_args(stub, population=population, aggregation_size=2, steps=2),
                           "--tasks", suite.name, "--include_path", str(suite.include_path),
                           "--apply_chat_template", "--use_cache", str(cache)], tmp_path, name)
            return out, stub.stats()["requests"]

        first, first_requests = run(2, "first")
        assert first.returncode == 0, first.stderr[-3000:]
        assert first_requests > 0
        second, second_requests = run(3, "second")
    if second.returncode != 0:  # refusing is fine, with one clear line naming the option
        assert "Traceback" not in second.stderr, second.stderr[-3000:]
        assert error_lines(second.stderr, "--use_cache"), second.stderr[-3000:]
    else:  # else the answers must be made anew with population=3
        assert second_requests > 0, ("--use_cache returned the population=2 answers for a "
                                     "population=3 run (the stub saw no request)")
        assert second.results["config"]["model_args"]["population"] == 3


# ------------------------------------------------------------------ trace + start-up line


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory):
    """One run of two tasks (gsm8k-cot and its 64-repeat self-consistency variant) with a
    trace, then the stub, still up, for a re-run."""
    tmp = tmp_path_factory.mktemp("two-tasks")
    cot = make_suite("gsm8k-cot", tmp, docs=1)
    sc = make_suite("gsm8k-cot-self-consistency", tmp, docs=1)
    trace = tmp / "trace" / "run.jsonl"
    with FormatStub() as stub:
        args = rsa_args(stub, population=2, aggregation_size=2, steps=2, trace=trace)
        run = lm_eval(["--model", "rsa-litellm", "--model_args", args,
                       "--tasks", f"{cot.name},{sc.name}", "--include_path", str(cot.include_path),
                       "--apply_chat_template"], tmp, "first")
        yield {"tmp": tmp, "stub": stub, "args": args, "run": run, "cot": cot, "sc": sc,
               "requests": stub.stats()["requests"]}


def test_startup_line_counts_model_calls_and_warns_about_repeats(two_tasks):
    run = two_tasks["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    # docs x repeats x N x T: gsm8k-cot 1 x 1 x 2 x 2, self-consistency 1 x 64 x 2 x 2
    calls = 1 * 1 * 2 * 2 + 1 * 64 * 2 * 2
    text = run.stderr + run.stdout
    lines = [line for line in text.splitlines()
             if re.search(rf"\b{calls}\b", line) and "call" in line.lower()]
    assert len(lines) == 1, f"no single line announcing {calls} model calls:\n{text[-3000:]}"
    warned = [line for line in text.splitlines() if "repeats" in line.lower() and "64" in line]
    assert warned, f"no warning about the task's repeats:\n{text[-3000:]}"


@pytest.mark.parametrize("subset", ["cot", "sc"])
def test_trace_is_keyed_by_task_so_a_subset_resumes(subset, two_tasks):
    """Re-running either task alone with the same trace= resumes it: no TraceMismatch and no
    new request (each task once, whichever way the first run ordered them)."""
    first = two_tasks["run"]
    assert first.returncode == 0, first.stderr[-3000:]
    stub, suite = two_tasks["stub"], two_tasks[subset]
    stub.reset()
    again = lm_eval(["--model", "rsa-litellm", "--model_args", two_tasks["args"],
                     "--tasks", suite.name, "--include_path", str(suite.include_path),
                     "--apply_chat_template"], two_tasks["tmp"], f"again-{subset}")
    assert "TraceMismatch" not in again.stderr, again.stderr[-3000:]
    assert again.returncode == 0, again.stderr[-3000:]
    assert stub.stats()["requests"] == 0, \
        f"{suite.name} was generated again ({stub.stats()['requests']} requests), not resumed"
    assert again.scores(suite.name) == first.scores(suite.name)


# ------------------------------------------------------------------ every request fails


@pytest.mark.parametrize("status, line", [
    (400, "RSA failed for every request"),
    (401, "the provider refused the credentials"),  # every call would: stopped at the first
])
def test_a_run_whose_every_request_failed_ends_with_one_line(status, line, tmp_path):
    suite = make_suite("gsm8k-cot", tmp_path, docs=2)
    with FormatStub(fail=status) as stub:
        run = lm_eval(["--model", "rsa-litellm", "--model_args",
                       rsa_args(stub, population=2, aggregation_size=2, steps=2),
                       "--tasks", suite.name, "--include_path", str(suite.include_path),
                       "--apply_chat_template"], tmp_path, "out")
        assert stub.stats()["requests"] > 0
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert error_lines(run.stderr, line), run.stderr[-3000:]
    for leak in ("Unclosed client session", "Unclosed connector"):
        assert leak not in run.stderr, run.stderr[-3000:]
