"""How an answer is read from a completion, per answer kind: the extractor functions that the
table of kinds (`rsa_plugins.kinds`) names.

The last ``\\boxed{}`` (math), an option letter (multiple choice), the last ``<answer>`` tag
(reasoning-gym), the last fenced block (code).  General answers take the most explicit marker
present: an ``<answer>`` tag, a ``\\boxed{}``, the last ``ANSWER:`` / ``Final answer:``
anywhere on a line, gsm8k's ``#### 42``, ``The (final) answer is 42``, else a short last line.
Answers are read the way models write them: bold, inside ``$...$`` or ``\\(...\\)``, "The final
answer is $42$. I hope it is correct.".  A completion that commits to nothing gives None
(counted as ``no_answer``), never its whole text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["last_boxed", "general_answer", "math_answer", "choice_answer", "code_answer",
           "tagged_answer"]

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
#: ``ANSWER: 42`` / ``Final answer: 42`` anywhere on a line (bold markers too); the last one wins
_MARKED = re.compile(r"(?<![A-Za-z])(?:\*\*|__)?(?:final\s+answer|answer)(?:\*\*|__)?[ \t]*[:：]"
                     r"(?:\*\*|__)?", re.I)
_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)
_GSM8K = re.compile(r"(?:^|(?<=\s))####[ \t]*\$?[ \t]*(-?[\d,]*\.?\d+)[ \t]*\.?[ \t]*$", re.M)
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+|correct\s+|best\s+)?answer\s+is\s*:?[ \t]*(.+?)"
                        r"[ \t]*(?:\.(?=\s)|\.?$)", re.I | re.M)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_LETTER = r"\(?\**\(?([A-Z])\)?\**\)?"
_LETTER_PATTERNS = [
    re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*\(?([A-Z])\)?\s*\}"),
    re.compile(r"(?i:answer)(?:\*\*)?\s*[:：]\s*(?:\$\s*)?" + _LETTER + r"(?![A-Za-z])"),
    re.compile(r"(?i:answer\s+is)\s*[:：]?\s*(?:\$\s*)?" + _LETTER + r"(?![a-zA-Z])"),
    re.compile(r"(?:^|\n)\s*(?:\*\*)?\(?([A-Z])\)?(?:\*\*)?[.:]?\s*$"),
]
#: wrappers models put around an answer: bold, italics, LaTeX math, \text{}, \boxed{}
_WRAPPERS = (("**", "**"), ("__", "__"), ("*", "*"), ("$", "$"), ("\\(", "\\)"),
             ("\\[", "\\]"), ("`", "`"))
#: a last line this short may be the answer itself ("Paris", "42"); longer prose is none
_SHORT_WORDS, _SHORT_CHARS = 8, 80


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


def _unwrap(answer: str) -> str | None:
    """An answer without what models wrap it in: ``**$42$**.`` -> ``42``."""
    s = answer.strip()
    if s.isalnum():  # nothing to unwrap: 42, B, Paris
        return s
    while True:
        before = s
        s = s.strip().rstrip(".;,").strip()
        if s.startswith(("\\boxed", "\\fbox")):
            s = last_boxed(s) or s
        if s.startswith("\\text{") and s.endswith("}"):
            s = s[6:-1]
        for left, right in _WRAPPERS:
            if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left):-len(right)]
        if s.startswith("$") and s.count("$") == 1:  # a currency sign: $1,000
            s = s[1:]
        if s == before:
            return s or None


def _marked(text: str) -> str | None:
    """The last ``ANSWER:`` / ``Final answer:``: the rest of its line, read as an answer
    ("Final Answer: The final answer is $5$. I hope it is correct." -> ``5``)."""
    last = None
    for last in _MARKED.finditer(text):
        pass
    found = text[last.end():].split("\n", 1)[0].strip() if last is not None else ""
    if not found:
        return None
    return _answer_is(found) or _unwrap(found)


def _answer_is(text: str) -> str | None:
    """``The answer is 42.`` / ``the final answer is $42$``: that sentence's rest, last one."""
    found = _last(_ANSWER_IS, text)
    if not found:
        return None
    boxed = last_boxed(found) if "\\boxed" in found else None
    return boxed or _unwrap(found)


def _gsm8k(text: str) -> str | None:
    """gsm8k's ``#### 42`` (a number closing its line, as lm-eval's own filter reads it)."""
    found = _last(_GSM8K, text)
    return found.replace(",", "") if found else None


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def _short_last_line(text: str) -> str | None:
    """The last line when it is short enough to be the answer itself, else None."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    line = _unwrap(lines[-1])
    if line is None or len(line) > _SHORT_CHARS or len(line.split()) > _SHORT_WORDS:
        return None
    return line


#: general answers, most explicit first: (text the marker needs, finder)
_GENERAL_MARKERS: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("<answer>", lambda t: _last(_ANSWER_TAG, t)),
    ("\\boxed", last_boxed),
    ("\\fbox", last_boxed),
    ("answer", _marked),
    ("####", _gsm8k),
    ("answer", _answer_is),
)


# ------------------------------------------------------------------ extractors per kind
# (text, n_choices) -> answer or None; `rsa_plugins.kinds` names one per kind


def general_answer(text: str, n_choices: int | None = None) -> str | None:
    """The most explicit marker present, else a short last line, else None."""
    low = text.lower()
    for needle, find in _GENERAL_MARKERS:
        if needle in low:  # a regex runs only where it can match
            found = find(text)
            if found:
                return found
    return _short_last_line(text)


def math_answer(text: str, n_choices: int | None = None) -> str | None:
    """The last ``\\boxed{}``, else a marked answer, else the last number."""
    boxed = last_boxed(text) if "\\boxed" in text or "\\fbox" in text else None
    if boxed:
        return boxed
    if "answer" in text.lower():
        found = _marked(text) or _answer_is(text)
        if found:
            return found
    return _gsm8k(text) if "####" in text else _last_number(text)


def choice_answer(text: str, n_choices: int | None = None) -> str | None:
    """An option letter (A..., within `n_choices`), the most explicit pattern first."""
    allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: n_choices or 26]
    for pattern in _LETTER_PATTERNS:
        hits = [h.upper() for h in pattern.findall(text) if h.upper() in allowed]
        if hits:
            return hits[-1]
    return None


def code_answer(text: str, n_choices: int | None = None) -> str | None:
    """The last fenced block, else the completion itself (a code completion is the program)."""
    return _last(_FENCE, text) or text.strip() or None


def tagged_answer(text: str, n_choices: int | None = None) -> str | None:
    """The last ``<answer>...</answer>``."""
    return _last(_ANSWER_TAG, text)
