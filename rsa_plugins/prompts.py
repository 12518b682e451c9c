"""Aggregation prompts per task kind, and the views of a candidate that go into them.

The wording paraphrases the paper's aggregation prompt: one user message that says several
candidate solutions follow (some possibly wrong), asks to merge their useful ideas, pick the
right path where they disagree and try a new approach if all are wrong; then the problem, the
candidates in numbered blocks, and a closing request for one improved solution in the task's
answer format.  K=1 has its own "refine this candidate" wording.
"""

from __future__ import annotations

from typing import Protocol

from .answers import extract
from .config import RSAConfig
from .types import Candidate, Problem

#: noun used for the task, and how the answer must be given, per kind
KIND_TEXT: dict[str, tuple[str, str]] = {
    "math": ("math problem", "the final answer written as \\boxed{...}"),
    "multiple_choice": (
        "multiple-choice question",
        "the letter of the correct option on its own last line, as ANSWER: X",
    ),
    "code": ("programming problem", "the complete final program in a single fenced code block"),
    "reasoning_gym": ("problem", "the final answer between <answer> and </answer> tags"),
    "general": ("problem", "a last line of the form ANSWER: <your final answer>"),
}

OMITTED = "[... earlier part omitted ...]\n"


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


def format_hint(problem: Problem, kind: str) -> str:
    return problem.metadata.get("format_hint") or KIND_TEXT[kind][1]


def tail(text: str, n_tokens: int, tokenizer: Tokenizer | None = None) -> tuple[str, bool]:
    """The last `n_tokens` tokens of `text` (about 4 characters a token without a tokenizer)."""
    if tokenizer is not None:
        ids = tokenizer.encode(text)
        if len(ids) <= n_tokens:
            return text, False
        return OMITTED + tokenizer.decode(ids[-n_tokens:]), True
    limit = 4 * n_tokens
    if len(text) <= limit:
        return text, False
    return OMITTED + text[-limit:], True


def candidate_view(cand: Candidate, config: RSAConfig, kind: str,
                   tokenizer: Tokenizer | None = None, view: str | None = None) -> str:
    """The text of a candidate as it appears in an aggregation prompt."""
    view = view or config.view
    text = cand.completion.text.strip()
    if view == "answer":
        answer = cand.answer if cand.answer is not None else extract(text, kind)
        return f"Final answer: {answer}" if answer is not None else text[-400:]
    if config.include_reasoning and cand.completion.reasoning:
        text = f"<think>\n{cand.completion.reasoning.strip()}\n</think>\n{text}"
    if view == "tail":
        text, _ = tail(text, config.tail_tokens, tokenizer)
    return text


def aggregation_prompt(problem: Problem, views: list[str], config: RSAConfig, kind: str) -> str:
    """Build the single user message that asks the model to aggregate `views`."""
    noun, hint = KIND_TEXT[kind][0], format_hint(problem, kind)
    if config.template is not None:
        blocks = "\n\n".join(f"---- Solution {i} ----\n{v}" for i, v in enumerate(views, 1))
        return config.template.format(problem=problem.prompt, candidates=blocks,
                                      format_hint=hint, k=len(views))
    if len(views) == 1:
        return (
            f"You are given a {noun} and one candidate solution to it. The candidate may be "
            "incomplete or contain mistakes. Refine it into a better, fully correct solution: "
            "check each step, fix what is wrong, and if its approach is wrong altogether, solve "
            f"the problem a different way. End your response with {hint}.\n\n"
            f"Problem:\n{problem.prompt}\n\n"
            f"---- Candidate ----\n{views[0]}\n\n"
            "Now refine the candidate into one improved solution. Reason clearly and end "
            f"with {hint}."
        )
    blocks = "\n\n".join(f"---- Solution {i} ----\n{v}" for i, v in enumerate(views, 1))
    return (
        f"You are given a {noun} and {len(views)} candidate solutions. Some of them may be "
        "wrong or incomplete. Combine the useful ideas of the candidates into one high-quality "
        "solution. Reason carefully; where the candidates disagree, work out which path is "
        "right; if every candidate is wrong, try a different approach of your own. "
        f"End your response with {hint}.\n\n"
        f"Problem:\n{problem.prompt}\n\n"
        "Candidate solutions (they may contain mistakes):\n\n"
        f"{blocks}\n\n"
        "Now write a single improved solution. Reason clearly and end with "
        f"{hint}."
    )


def messages(problem: Problem, user: str) -> list[dict[str, str]]:
    """Chat messages for one request (the problem's system message, if any, goes first)."""
    msgs = [{"role": "system", "content": problem.system}] if problem.system else []
    return msgs + [{"role": "user", "content": user}]
