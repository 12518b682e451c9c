"""Breadth suite (issue 22), lm-eval: twelve task files as lm-eval ships them, run plain and with
RSA against the format stub, score the same under the task's own scorer.

Each case copies a shipped YAML (``breadth_tasks.py``: local rows, ``!function`` helpers beside
the copy, otherwise as shipped) and runs it twice through ``lm_eval.simple_evaluate`` with
``--apply_chat_template`` (few-shot examples as chat turns): stock ``local-chat-completions``
(plain sampling) and ``rsa-litellm`` with N=2, K=2, T=2.  The stub is always right in the format
it was last shown, and an aggregation of code copies its first candidate verbatim.  Checked:
the same scores, every one of them perfect; N x T generations per document; no malformed
request (every one served, each carrying all of the task's stop strings, none carrying lm-eval's
chat JSON as text).  ``-s`` prints the table of task x (plain, RSA, calls).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from breadth_tasks import make_task, write_code_eval
from format_stub import FormatStub
from helpers import lm_eval_scores as scores
from rsa_plugins.prompts import aggregation_stop
from rsa_plugins.types import Problem

N, K, T, DOCS = 2, 2, 2, 2


@dataclass
class Case:
    relpath: str  # the shipped task file
    rows: str  # which rows (breadth_tasks.ROWS)
    options: dict[str, Any] = field(default_factory=dict)


CASES = {
    "minerva_math_algebra": Case("minerva_math/minerva_math_algebra.yaml", "minerva"),
    "bbh_cot_fewshot_object_counting": Case("bbh/cot_fewshot/object_counting.yaml", "bbh"),
    "gsm8k_cot_llama": Case("gsm8k/gsm8k-cot-llama.yaml", "math",
                            {"system_instruction": "You are a careful math tutor."}),
    "mmlu_pro_math": Case("mmlu_pro/mmlu_pro_math.yaml", "mmlu_pro"),
    "nq_open": Case("nq_open/nq_open.yaml", "qa"),
    "triviaqa": Case("triviaqa/default.yaml", "trivia"),
    "ifeval": Case("ifeval/ifeval.yaml", "ifeval"),
    "humaneval": Case("humaneval/humaneval.yaml", "humaneval"),
    "humaneval_instruct": Case("humaneval/humaneval_instruct.yaml", "humaneval"),
    "mbpp": Case("mbpp/mbpp.yaml", "mbpp"),
    "hendrycks_math_algebra": Case("hendrycks_math/hendrycks_math_algebra.yaml", "minerva"),
    "aime25": Case("aime/aime25.yaml", "aime"),
}
TABLE: list[str] = []


@pytest.fixture(scope="module")
def stub():
    with FormatStub() as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    if TABLE:
        print("\n| task | plain | RSA | calls (plain / RSA) |\n|---|---|---|---|\n"
              + "\n".join(TABLE))


def evaluate(tmp, name: str, model: str, model_args: dict[str, Any],
             options: dict[str, Any]) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tmp / "tasks"), include_defaults=False)
    results = lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=[name], task_manager=manager,
        apply_chat_template=True, fewshot_as_multiturn=True, bootstrap_iters=0,
        confirm_run_unsafe_code=True, **options)
    assert results is not None
    return results


def generations(log: list[dict[str, Any]]) -> int:
    return sum(int(e["body"].get("n") or 1) for e in log)


@pytest.mark.parametrize("name", list(CASES))
def test_task_scores_the_same_with_rsa(name, stub, tmp_path, monkeypatch):
    case = CASES[name]
    make_task(case.relpath, case.rows, tmp_path, f"local_{name}", DOCS)
    write_code_eval(tmp_path)
    monkeypatch.chdir(tmp_path)  # where humaneval's and mbpp's utils load code_eval from
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    task = f"local_{name}"
    runs = {"plain": ("local-chat-completions",
                      {"model": stub.model, "base_url": f"{stub.base_url}/chat/completions",
                       "tokenizer_backend": None}),
            "rsa": ("rsa-litellm", {"model": f"hosted_vllm/{stub.model}",
                                    "api_base": stub.base_url, "population": N,
                                    "aggregation_size": K, "steps": T})}
    got, logs, until = {}, {}, None
    for label, (model, args) in runs.items():
        stub.reset()
        results = evaluate(tmp_path, task, model, args, case.options)
        got[label], logs[label] = scores(results, task), stub.log()
        until = results["configs"][task]["generation_kwargs"].get("until", [])
    TABLE.append(f"| {name} | {got['plain']} | {got['rsa']} | "
                 f"{generations(logs['plain'])} / {generations(logs['rsa'])} |")

    assert got["plain"] and set(got["plain"].values()) == {1.0}, got["plain"]
    assert got["rsa"] == got["plain"]
    assert generations(logs["plain"]) == DOCS
    assert generations(logs["rsa"]) == DOCS * N * T
    first_user = [m for m in logs["plain"][0]["body"]["messages"] if m["role"] == "user"][-1]
    stops = {"sample": [s for s in until if s],  # every one of the task's (five for humaneval)
             "aggregation": aggregation_stop(until, Problem(first_user["content"]))}
    for e in logs["rsa"]:
        assert e["status"] == 200, e
        kind = "aggregation" if "---- Solution 1 ----" in str(e["body"]["messages"]) else "sample"
        assert e["body"].get("stop", []) == stops[kind], (kind, e["body"].get("stop"))
        roles = [m["role"] for m in e["body"]["messages"]]
        assert roles[-1] in ("user", "assistant") and "user" in roles, roles
        text = "\n".join(str(m["content"]) for m in e["body"]["messages"])
        assert '[{"role"' not in text, text[:300]


def test_the_suite_has_twelve_shipped_task_files():
    from task_suites import lm_eval_tasks_dir

    assert len(CASES) >= 12
    assert all((lm_eval_tasks_dir() / c.relpath).is_file() for c in CASES.values())
    assert os.environ.get("HF_DATASETS_OFFLINE") in (None, "1")
