"""Acceptance (issue 14), Inspect: ``--solver rsa`` serves open-ended tasks as the task does.

The tasks (``inspect_suites.py``) are shaped like inspect_evals' ``writingbench`` (open-ended
writing, ``generate()`` only) and ``agentic_misalignment`` (a ``system_message()`` solver before
``generate()``).  They run through ``inspect_ai.eval`` with the solver given by its registry name
and ``-S``-style arguments (what ``inspect eval ... --solver rsa_plugins/rsa -S ...`` does),
against the format stub (``format_stub.py``) served as ``openai-api/stub/stub``.  The stub
writes an e-mail signed with the name the latest instruction asks for, and appends an
``ANSWER:`` line only when a request asks for one; the tasks' scorer wants the signer's name as
the last line.  So RSA scores like plain generation exactly when it adds no answer line to an
open-ended task and keeps the task's system message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from format_stub import FormatStub
from inspect_suites import AGENT_SYSTEM, INBOX, WRITING

TASKS = str(Path(__file__).resolve().parent / "inspect_suites.py")
N, K, T = 3, 2, 2
RSA = {"population": N, "aggregation_size": K, "steps": T}


@pytest.fixture(scope="module")
def stub():
    with FormatStub() as server:
        yield server


@pytest.fixture
def inspect_env(stub, monkeypatch):
    monkeypatch.setenv("STUB_BASE_URL", stub.base_url)
    monkeypatch.setenv("STUB_API_KEY", "stub-key")
    return stub


def run(stub: FormatStub, tmp: Path, task: str, solver_args: dict[str, Any] | None
        ) -> tuple[Any, list[dict[str, Any]]]:
    """One eval of `task` (its own solver chain when `solver_args` is None, else RSA's)."""
    from inspect_ai import eval as inspect_eval
    from inspect_ai.solver import SolverSpec

    stub.reset()
    solver = None if solver_args is None else \
        SolverSpec("rsa_plugins/rsa", dict(solver_args), dict(solver_args))
    [log] = inspect_eval(f"{TASKS}@{task}", model="openai-api/stub/stub", model_base_url=stub.base_url,
                         solver=solver, log_dir=str(tmp / "logs"), display="none", max_retries=0)
    assert log.status == "success", log.error
    return log, stub.log()


def accuracy(log: Any) -> float:
    return float(log.results.scores[0].metrics["accuracy"].value)


def request_text(entry: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in entry["body"]["messages"])


@pytest.mark.parametrize("extra", [{}, {"preset": "none"}], ids=["default", "preset=none"])
def test_open_ended_writing_gets_no_answer_line(extra, inspect_env, tmp_path):
    plain, plain_requests = run(inspect_env, tmp_path, "writing", None)
    rsa, requests = run(inspect_env, tmp_path, "writing", {**RSA, **extra})
    assert accuracy(plain) == 1.0, [s.output.completion for s in plain.samples]
    assert len(plain_requests) == len(WRITING)

    problems = []
    # aggregation really happened: N x T calls per sample
    if len(requests) != len(WRITING) * N * T:
        problems.append(f"{len(requests)} requests, expected {len(WRITING) * N * T}")
    asking = [request_text(e) for e in requests if "ANSWER:" in request_text(e)]
    if asking:
        steps = sorted({"aggregation" if "Best regards" in t else "first step" for t in asking})
        problems.append(f"{len(asking)} of {len(requests)} requests ask for an ANSWER: line "
                        f"({', '.join(steps)}), e.g.:\n{asking[-1][-400:]}")
    answered = [s.output.completion for s in rsa.samples if "ANSWER:" in s.output.completion]
    if answered:
        problems.append(f"{len(answered)} outputs end with an ANSWER: line, e.g.:\n{answered[0]}")
    if accuracy(rsa) != accuracy(plain):
        problems.append(f"the task's scorer gives RSA {accuracy(rsa)}, plain generation "
                        f"{accuracy(plain)}")
    assert not problems, "\n- ".join(["", *problems])


def test_task_system_message_is_kept_with_the_system_message_option(inspect_env, tmp_path):
    plain, plain_requests = run(inspect_env, tmp_path, "agentic", None)
    assert accuracy(plain) == 1.0
    assert all(e["body"]["messages"][0] == {"role": "system", "content": AGENT_SYSTEM}
               for e in plain_requests)

    rsa, requests = run(inspect_env, tmp_path, "agentic", {**RSA, "system_message": AGENT_SYSTEM})
    assert len(requests) == len(INBOX) * N * T
    for e in requests:
        systems = [m for m in e["body"]["messages"] if m["role"] == "system"]
        assert [m["content"] for m in systems] == [AGENT_SYSTEM], json.dumps(e["body"])[:800]
        assert e["body"]["messages"][0]["role"] == "system"
        assert "ANSWER:" not in request_text(e), request_text(e)[-400:]
    assert accuracy(rsa) == accuracy(plain), [s.output.completion for s in rsa.samples]
