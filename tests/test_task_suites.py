"""Acceptance (issue 14): lm-eval's own task files score RSA exactly as they score plain sampling.

Each case copies a task YAML from the installed lm-eval (local rows, otherwise as shipped; see
``task_suites.py``) and runs it three times against the format stub (``format_stub.py``), a
server that is always right and answers in the format of the last format cue it reads:

(a) stock ``local-chat-completions`` (plain sampling, the baseline),
(b) ``rsa-litellm`` with steps=1 (parallel sampling only),
(c) ``rsa-litellm`` with steps=2 (one aggregation round).

All three must score 1.0 under the task's own filters; (b)'s requests must carry the same chat
(system, few-shot turns, user turn, assistant prefill) as (a)'s; (c) must really aggregate
(N x (T-1) aggregation requests per document and repeat, each showing its candidates); no
request may carry lm-eval's chat JSON as text.  Runs go through ``lm_eval.simple_evaluate`` with
a ``TaskManager`` over the copied files only (the CLI indexes every shipped task first, which
costs ~25 s a run here); the stock CLI is exercised in ``test_suite_behaviour.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from format_stub import FormatStub
from helpers import lm_eval_scores as scores
from task_suites import Suite, make_suite

K = 2


@dataclass
class Case:
    kind: str  # the shipped task file (gsm8k/<kind>.yaml or arc/<kind>.yaml)
    docs: int
    population: int = 4
    repeats: int = 1
    options: dict[str, Any] = field(default_factory=dict)  # simple_evaluate chat options
    filters: tuple[str, ...] = ()  # result keys the task must report


CASES = {
    "gsm8k": Case("gsm8k", 3, filters=("exact_match,strict-match", "exact_match,flexible-extract")),
    # a system message, then the 8 few-shot examples as chat turns (lm-eval's default with a
    # chat template)
    "gsm8k-cot-multiturn": Case(
        "gsm8k-cot", 3, options={"system_instruction": "You are a careful math tutor."},
        filters=("exact_match,strict-match", "exact_match,flexible-extract")),
    # the examples inline in one user turn
    "gsm8k-cot-single-turn": Case(
        "gsm8k-cot", 3, options={"fewshot_as_multiturn": False},
        filters=("exact_match,strict-match", "exact_match,flexible-extract")),
    # repeats: 64 -> 64 RSA runs per document: one document, N=2
    "gsm8k-cot-self-consistency": Case(
        "gsm8k-cot-self-consistency", 1, population=2, repeats=64,
        filters=("exact_match,score-first", "exact_match,maj@64", "exact_match,maj@8")),
    # gen_prefix "The best answer is": an assistant prefill; stop strings "\n\n" and "."
    "arc_challenge_chat": Case("arc_challenge_chat", 3, filters=("exact_match,remove_whitespace",)),
}


@pytest.fixture(scope="module")
def stub():
    with FormatStub() as server:
        yield server


def evaluate(suite: Suite, model: str, model_args: dict[str, Any], options: dict[str, Any]
             ) -> dict[str, Any]:
    """``simple_evaluate`` one copied task, as ``lm_eval --apply_chat_template`` would."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(suite.include_path), include_defaults=False)
    kwargs: dict[str, Any] = {"apply_chat_template": True, "fewshot_as_multiturn": True,
                              "log_samples": True, "bootstrap_iters": 0, **options}
    results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[suite.name],
                                      task_manager=manager, **kwargs)
    assert results is not None
    return results


def chat_key(body: dict[str, Any]) -> str:
    """The chat of a request (roles and contents, in order) as a comparable string."""
    return json.dumps([(m["role"], m["content"]) for m in body["messages"]])


def generations(log: list[dict[str, Any]]) -> int:
    return sum(int(e["body"].get("n") or 1) for e in log)


@pytest.mark.parametrize("name", list(CASES))
def test_rsa_scores_like_plain_sampling_under_the_tasks_own_filters(name, stub, tmp_path):
    case = CASES[name]
    suite = make_suite(case.kind, tmp_path, docs=case.docs)
    n = case.population
    rsa_args = {"model": f"hosted_vllm/{stub.model}", "api_base": stub.base_url,
                "population": n, "aggregation_size": K}
    runs = {
        "stock": ("local-chat-completions",
                  {"model": stub.model, "base_url": f"{stub.base_url}/chat/completions",
                   "tokenizer_backend": None}),
        "rsa steps=1": ("rsa-litellm", {**rsa_args, "steps": 1}),
        "rsa steps=2": ("rsa-litellm", {**rsa_args, "steps": 2}),
    }
    got: dict[str, dict[str, float]] = {}
    logs: dict[str, list[dict[str, Any]]] = {}
    for label, (model, model_args) in runs.items():
        stub.reset()
        results = evaluate(suite, model, model_args, case.options)
        got[label] = scores(results, suite.name)
        logs[label] = stub.log()
    print(f"\n{name}: " + "; ".join(f"{label}: {s}" for label, s in got.items()))

    problems = check_runs(case, got, logs)
    assert not problems, f"{name}:\n- " + "\n- ".join(problems)


def check_runs(case: Case, got: dict[str, dict[str, float]],
               logs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Everything wrong with the three runs of `case` (empty: all good)."""
    problems: list[str] = []

    # the task's own filters: every filter present, all 1.0, identical across the three runs
    for label, s in got.items():
        if not set(case.filters) <= set(s):
            problems.append(f"{label}: filters {sorted(s)}, expected {case.filters}")
    if got["stock"] != {f: 1.0 for f in got["stock"]}:
        problems.append(f"the stub is always right, yet stock scored {got['stock']}")
    for label in ("rsa steps=1", "rsa steps=2"):
        if got[label] != got["stock"]:
            problems.append(f"{label} scored {got[label]}, plain sampling {got['stock']}")

    # no request carries lm-eval's chat JSON as text
    for label, log in logs.items():
        for e in log:
            text = "\n".join(str(m.get("content")) for m in e["body"]["messages"])
            if '[{"role"' in text:
                problems.append(f"{label}: lm-eval's chat JSON sent as text: {text[:300]}")
                break

    # step-1 requests of rsa-litellm carry the stock chat: system, few-shot turns, user, prefill
    stock_chats = {chat_key(e["body"]) for e in logs["stock"]}
    one_chats = {chat_key(e["body"]) for e in logs["rsa steps=1"]}
    if one_chats != stock_chats:
        problems.append(_shape_diff(logs["stock"], logs["rsa steps=1"]))
    calls_per_state = case.docs * case.repeats * case.population
    if generations(logs["rsa steps=1"]) != calls_per_state:
        problems.append(f"rsa steps=1 made {generations(logs['rsa steps=1'])} generations, "
                        f"expected {calls_per_state}")

    # steps=2: the same first step as steps=1, then N x (T-1) aggregation requests per
    # document and repeat
    first = [e for e in logs["rsa steps=2"] if chat_key(e["body"]) in one_chats]
    aggregations = [e for e in logs["rsa steps=2"] if chat_key(e["body"]) not in one_chats]
    if generations(first) != calls_per_state:
        problems.append(f"rsa steps=2: {generations(first)} first-step generations, "
                        f"expected {calls_per_state}")
    if len(aggregations) != calls_per_state * (2 - 1):
        problems.append(f"rsa steps=2: {len(aggregations)} aggregation requests, "
                        f"expected {calls_per_state}")
    # each aggregation shows K candidates: the first step's reasoning appears K times in it
    # (math tasks; ARC's first-step replies are just the letter after the prefill)
    if case.kind != "arc_challenge_chat" and first:
        sentences = {e["reply"].split(" The answer is")[0].split("\n####")[0] for e in first}
        for e in aggregations:
            text = "\n".join(m["content"] for m in e["body"]["messages"])
            shown = max(text.count(s) for s in sentences)
            if shown < K:
                problems.append(f"an aggregation request shows {shown} candidates: {text[-600:]}")
                break
    # what aggregation asked for, in the stub's terms (the format of the last cue it read)
    formats = sorted({e.get("format") for e in aggregations})
    expected_formats = sorted({e.get("format") for e in logs["stock"]})
    if aggregations and formats != expected_formats:
        problems.append(f"aggregation requests ask for format(s) {formats}; the task's requests "
                        f"ask for {expected_formats}")
    return problems


def _shape_diff(stock: list[dict[str, Any]], rsa: list[dict[str, Any]]) -> str:
    """A readable first difference between the chats of the two runs."""
    def shape(e: dict[str, Any]) -> list[str]:
        return [f"{m['role']}: {str(m['content'])[:160]!r}" for m in e["body"]["messages"]]

    a = shape(stock[0]) if stock else []
    b = shape(rsa[0]) if rsa else []
    return "chat shapes differ\nstock:\n  " + "\n  ".join(a[-4:]) + "\nrsa:\n  " + "\n  ".join(b[-4:])


def test_copied_task_files_differ_from_the_shipped_ones_only_in_data_and_name(tmp_path):
    import yaml

    from task_suites import CHANGED, shipped_config

    for kind in ("gsm8k", "gsm8k-cot", "gsm8k-cot-self-consistency", "arc_challenge_chat"):
        suite = make_suite(kind, tmp_path / kind, docs=2)
        copied = yaml.safe_load((suite.include_path / f"{suite.name}.yaml").read_text())
        folder = "arc" if kind.startswith("arc") else "gsm8k"
        shipped = shipped_config(f"{folder}/{kind}.yaml")
        assert copied["dataset_path"] == "json" and "dataset_name" not in copied
        assert {k: v for k, v in copied.items() if k not in CHANGED} == \
            {k: v for k, v in shipped.items() if k not in CHANGED}
        assert Path(copied["dataset_kwargs"]["data_files"]["test"]).is_file()
