"""Answer extraction: what a completion commits to, per answer kind.

Extraction depends on the task kind: the last ``\\boxed{}`` (math), an option letter (multiple
choice), the last ``<answer>`` tag (reasoning-gym), the last fenced block (code); general answers
take the most explicit marker present: an ``<answer>`` tag, a ``\\boxed{}``, an ``ANSWER:`` /
``Final answer:`` line, gsm8k's ``#### 42``, ``The answer is 42.``, else the last line.

Equivalence and voting live in `rsa_plugins.equivalence` (imported here too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .equivalence import answer_key, cluster, entropy, equivalent, normalize, vote

__all__ = ["extract", "detect_kind", "last_boxed", "answer_key", "cluster", "entropy",
           "equivalent", "normalize", "vote"]

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_MARKED = re.compile(r"(?:^|\n)\s*(?:\*\*)?(?:final\s+answer|answer)(?:\*\*)?\s*[:：]\s*(.+)", re.I)
_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)
_GSM8K = re.compile(r"(?:^|(?<=\s))####[ \t]*\$?[ \t]*(-?[\d,]*\.?\d+)[ \t]*\.?[ \t]*$", re.M)
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\s*:?[ \t]*(.+?)[ \t]*(?:\.(?=\s)|\.?$)",
                        re.I | re.M)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_LETTER_PATTERNS = [
    re.compile(r"\\boxed\{\s*\(?([A-Z])\)?\s*\}"),
    re.compile(r"ANSWER\s*[:：]\s*\(?([A-Z])\)?\b"),
    re.compile(r"answer\s+is\s*[:：]?\s*\(?\**([A-Z])\**\)?(?![a-zA-Z])", re.I),
    re.compile(r"(?:^|\n)\s*\(?([A-Z])\)?\s*$"),
]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{}``), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i].strip()
    return None


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return found[-1].strip() if found else None


def _letter(text: str, n_choices: int | None) -> str | None:
    allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: n_choices or 26]
    for pattern in _LETTER_PATTERNS:
        hits = [h.upper() for h in pattern.findall(text) if h.upper() in allowed]
        if hits:
            return hits[-1]
    return None


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def _gsm8k(text: str) -> str | None:
    """gsm8k's ``#### 42`` (a number closing its line, as lm-eval's own filter reads it)."""
    found = _last(_GSM8K, text)
    return found.replace(",", "") if found else None


def _answer_is(text: str) -> str | None:
    """gsm8k-cot's ``The answer is 42.``: the rest of that sentence, last occurrence."""
    found = _last(_ANSWER_IS, text)
    return found.strip("*$ \t") if found else None


#: general answers, most explicit first: (text the marker needs, finder)
_GENERAL_MARKERS: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("<answer>", lambda t: _last(_ANSWER_TAG, t)),
    ("", last_boxed),
    ("answer", lambda t: _last(_MARKED, t)),
    ("####", _gsm8k),
    ("answer", _answer_is),
)


def extract(text: str, kind: str = "general", n_choices: int | None = None) -> str | None:
    """The answer a completion commits to, or None when it commits to none."""
    if not text:
        return None
    if kind == "reasoning_gym":
        return _last(_ANSWER_TAG, text)
    if kind == "math":
        return last_boxed(text) or _last(_MARKED, text) or _last_number(text)
    if kind == "multiple_choice":
        return _letter(text, n_choices)
    if kind == "code":
        return _last(_FENCE, text) or text.strip()
    # general / auto: the most explicit marker present wins
    low = text.lower()
    for needle, find in _GENERAL_MARKERS:
        if needle in low:  # a regex runs only where it can match
            found = find(text)
            if found:
                return found
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


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
