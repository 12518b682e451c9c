"""Canonical answer keys, equivalence and majority vote.

Equivalence scales with the population: each answer is normalised once into a canonical key
(`answer_key`, memoised), so `cluster` and `vote` group equal keys with a dict and compare only
the representatives of distinct keys: numbers numerically, and with math-verify only when both
look like mathematics (numbers, LaTeX, short expressions; never a sentence of prose).  math-verify
parses each distinct answer at most once and spends a bounded time per answer; it never uses
signals, so all of this runs safely (and thread-safely) in worker threads; `quick` says when
a population needs none of it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from .kinds import MATHEMATICAL

# ------------------------------------------------------------------ canonical keys

_MAX_MATH_CHARS = 200  # longer answers never go to math-verify (a parse cannot be interrupted)
#: CPU seconds of math-verify work (the calling thread's) one answer may cost per `cluster`
#: call, and at most per parse; beyond it, it matches by key or by number only
MATH_BUDGET_S = 1.0
_CACHE_LIMIT = 1 << 15

_TEXT = re.compile(r"^\\text\{(.*)\}$")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")  # a word, not a LaTeX command's name
_MATH_SIGN = re.compile(r"[\d\\^_=+\-*/<>()\[\]{}|!%]")
#: an exponent of five or more digits ("1E1982279", "2^{50000}"): sympy would build the number
#: (minutes for one comparison, which no budget can interrupt); "2^{2024}" still goes
_HUGE_POWER = re.compile(r"(?:[eE]|\^|\*\*)\s*\{?\s*[+-]?\d{5,}")
_MATH_NAMES = frozenset({"pi", "sqrt", "inf", "infty", "infinity", "sin", "cos", "tan", "cot",
                         "sec", "csc", "arcsin", "arccos", "arctan", "log", "ln", "exp", "mod",
                         "gcd", "lcm", "det", "max", "min"})


def _clean(answer: str) -> str:
    """`normalize` without the lower-casing (LaTeX is case-sensitive for math-verify)."""
    s = answer.strip().strip("$").strip()
    if s.startswith("\\text{"):
        s = _TEXT.sub(r"\1", s)
    return " ".join(s.rstrip(".").split())


def normalize(answer: Any) -> str:
    """Cheap canonical form: trimmed, no surrounding $ or trailing period, lower case."""
    return _clean(str(answer)).lower()


def _as_number(s: str) -> float | None:
    s = s.replace(",", "").replace(" ", "")
    if not s or not (s[0].isdecimal() or s[0] in "+-.iInN"):  # no number: skip the exception
        return None
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            return float(a) / float(b)
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


def _looks_mathematical(s: str) -> bool:
    """Numbers, LaTeX, short expressions (at most two plain words, e.g. units); not prose."""
    if not s or len(s) > _MAX_MATH_CHARS or _HUGE_POWER.search(s):
        return False
    prose = names = 0
    for word in _WORD.finditer(s):
        if word.group().lower() in _MATH_NAMES:
            names += 1
        else:
            prose += 1
            if prose > 2:
                return False
    return bool(names) or _MATH_SIGN.search(s) is not None or (len(s) == 1 and s.isalpha())


class _Entry(NamedTuple):
    key: str  # canonical key: equal keys are equivalent answers
    number: float | None  # its value when the answer is a plain number
    math: str | None  # the text math-verify parses; None when it does not look mathematical


def _entry(text: str, kind: str) -> _Entry:  # computed once per distinct short answer
    return _cached_entry(text, kind) if len(text) <= 1024 else _make_entry(text, kind)


def _make_entry(text: str, kind: str) -> _Entry:
    if kind == "code":
        return _Entry(" ".join(text.split()), None, None)
    clean = _clean(text)
    key = clean.lower()
    if kind == "multiple_choice":
        return _Entry(key, None, None)
    number = _as_number(key)
    if number is not None and math.isfinite(number):  # "1,000", "1000.0" and "2000/2" agree
        key = str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    mathematical = kind in MATHEMATICAL and _looks_mathematical(clean)
    return _Entry(key, number, clean if mathematical else None)


_cached_entry = lru_cache(maxsize=_CACHE_LIMIT)(_make_entry)


def answer_key(answer: Any, kind: str = "general") -> str | None:
    """The canonical key of an answer (None for no answer): equal keys mean equivalent answers
    (memoised; different keys may still be equivalent, ``1/2`` and ``\\frac{1}{2}``)."""
    return None if answer is None else _entry(str(answer), kind).key


# ------------------------------------------------------------------ math-verify

_MV_LOCK = threading.Lock()  # serialises math-verify and its caches across threads
_mv_ok: bool | None = None  # importable (and warmed up)?
_parsed: dict[str, Any] = {}  # math text -> parsed object (None: unparsable or too slow)
_verdicts: dict[tuple[str, str], bool] = {}  # (representative, other) -> equal
_WARM_UP = ("\\frac{1}{2}", "x^2+1", "(x+1)^2", "\\{1,2\\}", "(1,2)", "x=5", "\\sqrt{2}", "50\\%")


def _mv_parse(text: str) -> Any:
    from math_verify import parse

    # math-verify's timeouts use SIGALRM (main thread only): off; the budget bounds the work
    return parse(f"${text}$", parsing_timeout=None)


def _mv_verify(a: Any, b: Any) -> bool:
    from math_verify import verify

    return bool(verify(a, b, timeout_seconds=None))


def _available() -> bool:
    """Import math-verify once and warm up its lazy parts, so no answer pays for them."""
    global _mv_ok
    if _mv_ok is None:
        try:  # a core dependency; stay usable without it
            from math_verify import parse, verify
        except ImportError:
            _mv_ok = False
            return False
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        try:
            warm = [parse(f"${t}$", parsing_timeout=None) for t in _WARM_UP]
            for x, y in zip(warm, warm[1:]):
                verify(x, y, timeout_seconds=None)
        except Exception:  # noqa: BLE001 - warming up is best effort
            pass
        _mv_ok = True
    return _mv_ok


def _parse_once(text: str) -> Any:
    """The parsed answer (cached); one slower to parse than the budget counts as unparsable."""
    if text not in _parsed:
        if len(_parsed) >= _CACHE_LIMIT:
            _parsed.clear()
        start = time.thread_time()
        try:
            parsed = _mv_parse(text)
        except Exception:  # noqa: BLE001 - unparsable: equal by key only
            parsed = None
        _parsed[text] = parsed if time.thread_time() - start <= MATH_BUDGET_S else None
    return _parsed[text]


def _math_equal(a: str, b: str, spent: dict[str, float] | None = None) -> bool:
    """math-verify's verdict on two mathematical texts (cached).

    `spent` counts each text's seconds of math-verify work within one `cluster` call; a text
    past `MATH_BUDGET_S` is compared no further there.  No signals: safe in any thread.
    """
    with _MV_LOCK:
        verdict = _verdicts.get((a, b))
        if verdict is not None:
            return verdict
        if not _available():
            return False
        if spent is not None and max(spent.get(a, 0.0), spent.get(b, 0.0)) > MATH_BUDGET_S:
            return False
        start = time.thread_time()
        pa, pb = _parse_once(a), _parse_once(b)
        verdict = False
        if pa and pb:
            try:
                verdict = _mv_verify(pa, pb)
            except Exception:  # noqa: BLE001
                verdict = False
        if len(_verdicts) >= _CACHE_LIMIT:
            _verdicts.clear()
        _verdicts[(a, b)] = verdict
        if spent is not None:
            took = time.thread_time() - start
            spent[a] = spent.get(a, 0.0) + took
            spent[b] = spent.get(b, 0.0) + took
        return verdict


def _reset_caches() -> None:
    """Forget every key, parse and verdict (tests and benchmarks measure cold runs)."""
    _cached_entry.cache_clear()
    with _MV_LOCK:
        _parsed.clear()
        _verdicts.clear()


# ------------------------------------------------------------------ equivalence


def _same(a: _Entry, b: _Entry, spent: dict[str, float] | None = None) -> bool:
    if a.key == b.key:
        return True
    if a.number is not None and b.number is not None:
        return math.isclose(a.number, b.number, rel_tol=1e-9, abs_tol=1e-9)
    if a.math is not None and b.math is not None:
        return _math_equal(a.math, b.math, spent)
    return False


def quick(answers: Sequence[Any], kind: str = "general") -> bool:
    """Whether clustering `answers` asks math-verify nothing: no two distinct keys of which one
    is mathematics but not a plain number (so it can run on the event loop)."""
    entries = {e.key: e for a in answers if a is not None for e in (_entry(str(a), kind),)}
    return len(entries) < 2 or all(e.math is None or e.number is not None
                                   for e in entries.values())


def equivalent(a: Any, b: Any, kind: str = "general") -> bool:
    """Whether two extracted answers say the same thing.

    Equal keys; else for numbers, equal values; else (math and general kinds) math-verify's
    verdict when both look like mathematics.  Code compares whitespace-collapsed text, multiple
    choice the normalised letter.
    """
    if a is None or b is None:
        return False
    return _same(_entry(str(a), kind), _entry(str(b), kind))


# ------------------------------------------------------------------ voting


def cluster(answers: Sequence[Any], kind: str = "general") -> list[list[int]]:
    """Group indices of equivalent answers; None answers are left out.  First seen = first cluster.

    Answers are grouped by key (one dict pass); then each distinct key joins the first earlier
    cluster whose representative (its first answer) is equivalent, which only numbers and
    mathematical answers can be.  Thread-safe.
    """
    groups: dict[str, list[int]] = {}
    firsts: list[_Entry] = []
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        entry = _entry(str(ans), kind)
        members = groups.get(entry.key)
        if members is None:
            groups[entry.key] = [i]
            firsts.append(entry)
        else:
            members.append(i)
    clusters: list[list[int]] = []
    comparable: list[tuple[_Entry, list[int]]] = []  # representatives that may match another key
    spent: dict[str, float] = {}  # math-verify seconds per answer, this call
    for entry in firsts:
        members = groups[entry.key]
        if entry.number is not None or entry.math is not None:
            for rep, target in comparable:
                if _same(rep, entry, spent):
                    target.extend(members)
                    break
            else:
                comparable.append((entry, members))
                clusters.append(members)
        else:
            clusters.append(members)
    for members in clusters:
        members.sort()
    return clusters


def vote(answers: Sequence[Any], kind: str = "general") -> tuple[int | None, dict[str, int]]:
    """Majority vote.  Returns (index of a member of the largest cluster, votes per answer).

    Votes are keyed by each cluster's first answer.  Ties go to the cluster seen first, as in
    the paper's code.  Thread-safe.
    """
    clusters = cluster(answers, kind)
    votes = {str(answers[c[0]]): len(c) for c in clusters}
    if not clusters:
        return None, votes
    best = max(clusters, key=len)  # max keeps the first of equal sizes
    return best[0], votes
