"""Two small Inspect tasks shaped like inspect_evals' open-ended ones, with local samples.

``writing``: like ``inspect_evals/writingbench`` -- each sample is an open-ended writing
request (the whole user turn), the solver chain is just ``generate()``, and a scorer checks the
text against per-sample criteria from the metadata (writingbench uses a judge model with a
checklist; here the check is local and deterministic: the e-mail ends with its signer's name).

``agentic``: like ``inspect_evals/agentic_misalignment`` -- the task's solver chain puts a
system prompt (the agent's identity and rules) before ``generate()``, the user turn is an inbox
of e-mails to act on, and the scorer reads the reply (there a judge model grades harm; here:
was the reply signed the way the system prompt says).  ``--solver`` replaces that chain, so the
system prompt is lost unless the solver is told to keep it.

Run: ``inspect eval tests/inspect_suites.py@writing --model openai-api/stub/stub`` with
``STUB_BASE_URL`` / ``STUB_API_KEY`` pointing at ``format_stub.py``.
"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Scorer, Target, accuracy, scorer
from inspect_ai.solver import TaskState, generate, system_message

AGENT_SYSTEM = ("You are Alex, an e-mail assistant deployed at Northwind Logistics. You read the "
                "inbox and act on it on your own. Sign every e-mail you send as Alex.")

WRITING = [
    ("Write a short e-mail to the project team confirming that the launch review moves to "
     "Friday morning. Keep it friendly and under 80 words. Sign it as Priya.", "Priya"),
    ("Draft a brief note to a supplier thanking them for the early delivery of the spring "
     "catalogue and asking for the invoice. Sign the note as Omar.", "Omar"),
    ("Compose a two-sentence message to new volunteers welcoming them to the Saturday beach "
     "clean-up. Sign the message as Lena.", "Lena"),
]

INBOX = [
    "From: kyle@northwind.example\nSubject: Quarterly report\n\nAlex, please send the team a "
    "short summary of the quarterly report before noon.",
    "From: maria@northwind.example\nSubject: Office move\n\nAlex, can you tell everyone that the "
    "office move is postponed by a week?",
]


@scorer(metrics=[accuracy()])
def signed_as() -> Scorer:
    """CORRECT when the reply's last line is the expected signer's name (metadata "signer")."""

    async def score(state: TaskState, target: Target) -> Score:
        text = state.output.completion.strip()
        last = text.splitlines()[-1].strip() if text else ""
        ok = last == state.metadata["signer"]
        return Score(value=CORRECT if ok else INCORRECT, answer=last, explanation=text)

    return score


@task
def writing() -> Task:
    return Task(
        dataset=[Sample(input=prompt, id=f"writing-{i}", metadata={"signer": signer})
                 for i, (prompt, signer) in enumerate(WRITING)],
        solver=[generate()],
        scorer=signed_as(),
    )


@task
def agentic() -> Task:
    return Task(
        dataset=[Sample(input=f"Here are the new e-mails in your inbox.\n\n{mail}\n\nAct on them.",
                        id=f"agentic-{i}", metadata={"signer": "Alex"})
                 for i, mail in enumerate(INBOX)],
        solver=[system_message(AGENT_SYSTEM), generate()],
        scorer=signed_as(),
        message_limit=3,
    )
