"""Answers: what a completion commits to, per answer kind (the kind's extractor, see
`rsa_plugins.extractors` and the table `rsa_plugins.kinds`), and which kind a prompt asks for.

Equivalence and voting live in `rsa_plugins.equivalence` (imported here too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from . import kinds as _kinds
from .equivalence import answer_key, cluster, equivalent, normalize, vote
from .extractors import last_boxed

__all__ = ["extract", "detect_kind", "last_boxed", "answer_key", "cluster",
           "equivalent", "normalize", "vote"]


def extract(text: str, kind: str = "general", n_choices: int | None = None) -> str | None:
    """The answer a completion commits to, or None when it commits to none (`rsa_plugins.kinds`
    says how each kind reads it)."""
    if not text:
        return None
    return _kinds.get("general" if kind == "auto" else kind).extract(text, n_choices)


def detect_kind(prompt: str, choices: Sequence[str] | None = None) -> str:
    """Guess the task kind from the prompt's own answer-format instruction."""
    if choices:
        return "multiple_choice"
    if "<answer>" in prompt:
        return "reasoning_gym"
    if "\\boxed" in prompt:
        return "math"
    if "```" in prompt or re.search(r"\b(write|implement) (a )?(python )?(function|program|code)\b",
                                     prompt, re.I):
        return "code"
    return "general"
