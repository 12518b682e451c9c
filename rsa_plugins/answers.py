"""Answer extraction, equivalence and majority vote.

Extraction depends on the task kind: the last ``\\boxed{}`` (math), an option letter (multiple
choice), the last ``<answer>`` tag (reasoning-gym), the last fenced block (code), or a marked
``ANSWER:`` / ``Final answer:`` line (general).  Equivalence uses math-verify for math answers
when it is installed, and normalised string or number comparison otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_MARKED = re.compile(r"(?:^|\n)\s*(?:\*\*)?(?:final\s+answer|answer)(?:\*\*)?\s*[:：]\s*(.+)", re.I)
_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)
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
    for found in (_last(_ANSWER_TAG, text), last_boxed(text), _last(_MARKED, text)):
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


# ------------------------------------------------------------------ equivalence


def normalize(answer: Any) -> str:
    """Cheap canonical form: trimmed, no surrounding $ or trailing period, lower case."""
    s = str(answer).strip()
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
    s = s.rstrip(".").strip()
    s = re.sub(r"\s+", " ", s)
    return s.lower()


def _as_number(s: str) -> float | None:
    s = s.replace(",", "").replace(" ", "")
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            return float(a) / float(b)
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


@lru_cache(maxsize=4096)
def _math_verify_equal(a: str, b: str) -> bool:
    try:
        import logging

        from math_verify import parse, verify

        logging.getLogger("math_verify").setLevel(logging.ERROR)
    except ImportError:  # math-verify is a core dependency, but stay usable without it
        return False
    try:
        # timeouts use SIGALRM, which only works on the main thread: switch them off
        pa = parse(f"${a}$", parsing_timeout=None)
        pb = parse(f"${b}$", parsing_timeout=None)
        return bool(pa and pb and verify(pa, pb, timeout_seconds=None))
    except Exception:
        return False


def equivalent(a: Any, b: Any, kind: str = "general") -> bool:
    """Whether two extracted answers say the same thing."""
    if a is None or b is None:
        return False
    if kind == "code":
        return " ".join(str(a).split()) == " ".join(str(b).split())
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return True
    if kind == "multiple_choice":
        return False
    xa, xb = _as_number(na), _as_number(nb)
    if xa is not None and xb is not None:
        return math.isclose(xa, xb, rel_tol=1e-9, abs_tol=1e-9)
    if kind in ("math", "general", "auto"):
        return _math_verify_equal(str(a), str(b))
    return False


# ------------------------------------------------------------------ voting


def cluster(answers: Sequence[Any], kind: str = "general") -> list[list[int]]:
    """Group indices of equivalent answers; None answers are left out.  First seen = first cluster."""
    clusters: list[list[int]] = []
    keys: dict[str, int] = {}
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        key = normalize(ans) if kind != "code" else " ".join(str(ans).split())
        if key in keys:
            clusters[keys[key]].append(i)
            continue
        for ci, members in enumerate(clusters):
            if equivalent(answers[members[0]], ans, kind):
                members.append(i)
                keys[key] = ci
                break
        else:
            keys[key] = len(clusters)
            clusters.append([i])
    return clusters


def vote(answers: Sequence[Any], kind: str = "general") -> tuple[int | None, dict[str, int]]:
    """Majority vote.  Returns (index of a member of the largest cluster, votes per answer).

    Ties go to the cluster seen first, as in the paper's code.
    """
    clusters = cluster(answers, kind)
    votes = {str(answers[c[0]]): len(c) for c in clusters}
    if not clusters:
        return None, votes
    best = max(clusters, key=len)  # max keeps the first of equal sizes
    return best[0], votes


def entropy(counts: Sequence[int]) -> float:
    """Shannon entropy (nats) of a vote distribution."""
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c) if total else 0.0
