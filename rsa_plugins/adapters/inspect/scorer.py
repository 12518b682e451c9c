"""``answer_match``: score an output the way RSA reads answers."""

from __future__ import annotations

from inspect_ai.scorer import (
    CORRECT,
    INCORRECT,
    NOANSWER,
    Score,
    Scorer,
    Target,
    accuracy,
    scorer,
    stderr,
)
from inspect_ai.solver import TaskState

from ...answers import equivalent, extract
from ...kinds import NAMES
from ...validate import check_choice
from ._compat import qualified_name


@scorer(metrics=[accuracy(), stderr()], name=qualified_name("answer_match"))
def answer_match(kind: str = "math") -> Scorer:
    """Extract the answer of ``state.output`` the way RSA does and compare it with the target.

    ``kind`` picks extraction and equivalence (``math``: last ``\\boxed{}``, else an ``ANSWER:``
    line, else the last number; compared with math-verify).
    """
    check_choice("kind", kind, NAMES)

    async def score(state: TaskState, target: Target) -> Score:
        text = state.output.completion
        answer = extract(text, kind)
        if answer is None:
            return Score(value=NOANSWER if not text else INCORRECT, answer=None, explanation=text)
        right = any(equivalent(answer, t, kind) for t in target.target)
        return Score(value=CORRECT if right else INCORRECT, answer=str(answer), explanation=text)

    return score
