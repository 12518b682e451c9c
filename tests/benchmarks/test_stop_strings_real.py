"""Do the task's stop strings cut aggregated replies before their answer?  (issue 22, item 5)

``\\n`` / ``.`` / ``,`` in nq_open and triviaqa, ``Q`` and a blank line in BBH, ``Problem:`` in
minerva_math.  An aggregated reply opens differently from a plain one (it has candidates to
weigh), so it may stop at one of them before it says its answer.  This runs lm-eval's own task
files (local rows, ``breadth_tasks.py``) with ``rsa-litellm`` on the embedded SmolLM2-135M
(vLLM's CPU server), asks vLLM to keep the stop string it stopped at in the text
(``include_stop_str_in_output``), and prints, per task, rule and step, the share of replies that
ended at a stop string, and the share that ended there without an answer (the task's own notion:
BBH "the answer is", Minerva "Final Answer", the short-answer tasks: an empty reply or one that
talks about the candidates instead of answering).  Step 1 (plain sampling) is the baseline in
the same run.  Rules: "every stop" (each step sends all of the task's stop strings, as before)
and "aggregation rule" (`rsa_plugins.prompts.aggregation_stop`), where it differs.

    pytest -m slow tests/benchmarks/test_stop_strings_real.py -s    # about 10 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from breadth_tasks import make_task
from rsa_plugins.prompts import aggregation_stop
from servers import VLLMServer

pytestmark = [pytest.mark.real, pytest.mark.benchmark, pytest.mark.slow]

N, K, T, DOCS, MAX_TOKENS = 4, 2, 2, 4, 160
TASKS = {"nq_open": ("nq_open/nq_open.yaml", "qa"),
         "triviaqa": ("triviaqa/default.yaml", "trivia"),
         "bbh_object_counting": ("bbh/cot_fewshot/object_counting.yaml", "bbh"),
         "minerva_algebra": ("minerva_math/minerva_math_algebra.yaml", "minerva")}
RULES = ("every stop", "aggregation rule")
#: the tasks whose aggregation stop strings the rule changes
CHANGED = ("bbh_object_counting", "minerva_algebra")
META = re.compile(r"\b(candidate|solution|response)s?\b", re.I)


def answered(task: str, body: str) -> bool:
    """Whether `body` (a reply without the stop string it ended at) commits to an answer."""
    if task.startswith("bbh"):
        return re.search(r"the answer is", body, re.I) is not None
    if task.startswith("minerva"):
        return re.search(r"final answer is", body, re.I) is not None
    return bool(body.strip()) and not META.search(body)


@pytest.fixture(scope="module")
def vllm_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    log = tmp_path_factory.mktemp("vllm-stops") / "server.log"
    timeout = float(os.environ.get("RSA_VLLM_STARTUP_TIMEOUT", "600"))
    with VLLMServer(smollm2_dir, "smollm2", log_path=log, startup_timeout=timeout,
                    max_model_len=4096) as server:
        yield server


def shares(trace: Path, task: str) -> dict[int, tuple[int, float, float]]:
    """Per step: (replies, share ended at a stop string, share ended there without an answer)."""
    lines = [json.loads(x) for x in trace.read_text().splitlines() if x.strip()]
    stops = [s for s in lines[0]["config"]["stop"] if s]
    out: dict[int, list[tuple[bool, bool]]] = {}
    for rec in lines:
        if "text" not in rec or rec.get("error"):
            continue
        text = rec["text"]
        hit = next((s for s in stops if rec.get("finish_reason") == "stop" and text.endswith(s)),
                   None)
        body = text[: -len(hit)] if hit else text
        out.setdefault(rec["step"], []).append((hit is not None, hit is not None
                                                and not answered(task, body)))
    return {step: (len(v), sum(a for a, _ in v) / len(v), sum(b for _, b in v) / len(v))
            for step, v in sorted(out.items())}


@pytest.mark.timeout(3600)
def test_stop_strings_and_aggregated_replies(vllm_server, tmp_path, show, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import rsa_plugins.plan

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = ["| task | stop strings | rule | step | replies | ended at a stop | ... without an "
            "answer |", "|---|---|---|---|---|---|---|"]
    examples = []
    every = (lambda stop, problem: list(stop))
    for (name, (relpath, kind)), rule in [(t, r) for t in TASKS.items() for r in RULES]:
        if rule == "every stop" and name not in CHANGED:
            continue  # the rule keeps this task's stop strings: the same requests, same replies
        monkeypatch.setattr(rsa_plugins.plan, "aggregation_stop", every if rule == "every stop"
                            else aggregation_stop)
        make_task(relpath, kind, tmp_path, name, DOCS)
        manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
        trace = tmp_path / rule.replace(" ", "_") / f"{name}.jsonl"
        lm_eval.simple_evaluate(
            model="rsa-litellm", tasks=[name], task_manager=manager, bootstrap_iters=0,
            apply_chat_template=True, fewshot_as_multiturn=True,
            model_args={"model": f"hosted_vllm/{vllm_server.model_name}",
                        "api_base": vllm_server.base_url, "population": N,
                        "aggregation_size": K, "steps": T, "max_tokens": MAX_TOKENS,
                        "seed": 1, "trace": str(trace),
                        "sampling": {"include_stop_str_in_output": True}})
        [written] = trace.parent.glob(f"{name}.{name}*.jsonl")
        header = json.loads(written.read_text().splitlines()[0])
        for step, (count, at_stop, unanswered) in shares(written, name).items():
            rows.append(f"| {name} | {header['config']['stop']} | {rule} | {step} | {count} | "
                        f"{at_stop:.2f} | {unanswered:.2f} |")
            assert count == DOCS * N
        examples += [f"{name} / {rule}: {json.loads(x)['text'][:200]!r}"
                     for x in written.read_text().splitlines()[1:]
                     if '"step": 2' in x and '"text"' in x][:3]
    show("\n".join(rows + ["", "aggregated replies (first 3 per task and rule):", *examples]))
