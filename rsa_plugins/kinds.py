"""Answer kinds: one table of what RSA knows about each kind of answer.

A kind says how answers are extracted and compared, and -- where RSA itself chooses the answer
format (its own tasks, ``rsa run``, an Inspect preset) -- which format it asks for.  Prompts,
extraction, equivalence, `RSAConfig` and every adapter read this table; nothing else lists
kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .extractors import choice_answer, code_answer, general_answer, math_answer, tagged_answer
from .validate import check_choice

__all__ = ["Kind", "KINDS", "NAMES", "MATHEMATICAL", "get"]


@dataclass(frozen=True)
class Kind:
    """One answer kind.

    `clause`: the answer format RSA asks for when it chooses the format ("the final answer
    written as \\boxed{...}").  `noun`: what the task is called in aggregation prompts.
    `marker`: text that shows a prompt already asks for this format.  `extractor(text,
    n_choices)`: the answer a completion commits to, or None.  `mathematical`: answers may be
    compared as mathematics (math-verify) when both look like it.
    """

    name: str
    clause: str
    noun: str
    marker: str
    extractor: Callable[[str, int | None], str | None]
    mathematical: bool = False

    @property
    def instruction(self) -> str:
        """The sentence RSA appends to a prompt when it chooses this kind's answer format."""
        return f"Reason step by step, then end your response with {self.clause}."

    def extract(self, text: str, n_choices: int | None = None) -> str | None:
        return self.extractor(text, n_choices) if text else None


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("math", "the final answer written as \\boxed{...}", "math problem", "\\boxed",
         math_answer, mathematical=True),
    Kind("multiple_choice", "the letter of the correct option on its own last line, as ANSWER: X",
         "multiple-choice question", "ANSWER:", choice_answer),
    Kind("code", "the complete final program in a single fenced code block",
         "programming problem", "```", code_answer),
    Kind("reasoning_gym", "the final answer between <answer> and </answer> tags", "problem",
         "<answer>", tagged_answer),
    Kind("general", "a last line of the form ANSWER: <your final answer>", "problem", "ANSWER:",
         general_answer, mathematical=True),
)}
#: every kind's name, in table order
NAMES: tuple[str, ...] = tuple(KINDS)
#: kinds whose answers may be compared as mathematics ("auto" too: it may turn out math)
MATHEMATICAL = frozenset({"auto", *(k.name for k in KINDS.values() if k.mathematical)})


def get(name: str) -> Kind:
    """The kind called `name` (a one-line error naming the kinds otherwise)."""
    kind = KINDS.get(name)
    if kind is None:
        check_choice("kind", name, NAMES)
    return KINDS[name]
