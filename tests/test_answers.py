"""Answer processing: canonical keys, grouping, math-verify only for mathematics, thread safety,
and the general-kind extraction of lm-eval's answer conventions."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rsa_plugins import equivalence
from rsa_plugins.answers import answer_key, cluster, equivalent, extract, normalize, vote
from rsa_plugins.metrics import entropy

PROSE = [f"I would say the {w} matters most, for {i + 2} separate reasons."
         for i, w in enumerate(("river", "lantern", "granite", "orchard", "signal", "harbour"))]
MATH = ["1/2", "\\frac{1}{2}", "0.5", "x^2+2x+1", "(x+1)^2", "\\sqrt{2}", "3", "3.0"]


@pytest.fixture
def mv_calls(monkeypatch):
    """Counts math-verify's parses (by text) and verifications, on cold caches."""
    equivalence._reset_caches()
    calls: dict[str, list] = {"parse": [], "verify": []}
    parse, verify = equivalence._mv_parse, equivalence._mv_verify
    monkeypatch.setattr(equivalence, "_mv_parse", lambda t: calls["parse"].append(t) or parse(t))
    monkeypatch.setattr(equivalence, "_mv_verify",
                        lambda a, b: calls["verify"].append((str(a), str(b))) or verify(a, b))
    yield calls
    equivalence._reset_caches()


# ------------------------------------------------------------------ keys and grouping


def test_answer_key_is_the_canonical_form():
    assert answer_key(None) is None
    assert answer_key(" $Paris$ ") == answer_key("Paris.") == answer_key("\\text{Paris}") == "paris"
    assert answer_key("1,000") == answer_key("1000") == answer_key("1000.0") == answer_key("2000/2")
    assert answer_key("1/2") == answer_key("0.5") != answer_key("\\frac{1}{2}")
    assert answer_key("def f():\n    return 1", "code") == answer_key("def f():  return 1", "code")
    assert answer_key("def f(): return 1", "code") != answer_key("def F(): return 1", "code")
    assert answer_key("1", "multiple_choice") != answer_key("1.0", "multiple_choice")
    assert normalize("  $X  +\n  1$ ") == "x + 1"


def test_cluster_groups_by_key_first_seen_first_and_members_in_order():
    got = cluster(["b", None, "a", "B.", "1,000", "a", "1000", "c"])
    assert got == [[0, 3], [2, 5], [4, 6], [7]]
    assert cluster([]) == [] and cluster([None, None]) == []


def test_vote_ties_go_to_the_first_seen_cluster_and_votes_name_its_first_answer():
    assert vote(["7", "42", "42.0", "7"]) == (0, {"7": 2, "42": 2})
    assert vote(["Paris", "london", "paris."]) == (0, {"Paris": 2, "london": 1})
    assert vote([None]) == (None, {})
    assert entropy([2, 2]) == pytest.approx(0.6931471805599453)


def test_math_answers_are_equivalent_across_forms():
    for kind in ("math", "general"):
        got = cluster(["1/2", "\\frac{1}{2}", "0.5", "\\dfrac12", "2"], kind)
        assert got == [[0, 1, 2, 3], [4]]
        assert equivalent("(x+1)^2", "x^2+2x+1", kind)
        assert equivalent("\\sqrt{2}", "2^{1/2}", kind)
        assert not equivalent("\\frac{1}{3}", "0.5", kind)


def test_kinds_keep_their_own_equivalence():
    assert equivalent("1,000", "1000", "reasoning_gym")
    assert not equivalent("1/2", "\\frac{1}{2}", "reasoning_gym")  # no math-verify there
    assert not equivalent("A", "(A)", "multiple_choice") and equivalent("b", "B", "multiple_choice")
    assert equivalent("x  =  1\n", "x = 1", "code") and not equivalent("x=1", "x = 1", "code")
    assert not equivalent(None, None) and not equivalent("1", None)


def test_words_are_not_multiplied_symbols():
    # math-verify reads "no" and "on" as n*o and o*n: plain words never reach it
    assert not equivalent("no", "on") and not equivalent("ab", "ba")
    assert equivalent("2 apples", "2")  # a number with a unit still is mathematics


# ------------------------------------------------------------------ math-verify: mathematics only


def test_prose_never_reaches_math_verify(mv_calls):
    population = PROSE + ["The answer is 5", "5", "Paris", "yes", "x" * 300 + "=1", "1/2"]
    assert len(cluster(population)) == len(population)
    vote(population, "math")
    assert not any(equivalent(p, "\\frac{1}{2}") for p in PROSE)
    assert mv_calls["parse"] == [] and mv_calls["verify"] == []
    assert equivalent("5", "\\frac{10}{2}")  # mathematics does reach it
    assert mv_calls["parse"] == ["5", "\\frac{10}{2}"]


def test_each_answer_is_parsed_once_and_pairs_verified_once(mv_calls):
    first = cluster(MATH * 2)
    assert cluster(MATH) == [[0, 1, 2], [3, 4], [5], [6, 7]]
    assert first == [[0, 1, 2, 8, 9, 10], [3, 4, 11, 12], [5, 13], [6, 7, 14, 15]]
    for _ in range(3):
        vote(MATH)
    assert sorted(mv_calls["parse"]) == sorted(set(mv_calls["parse"]))
    assert len(mv_calls["verify"]) == len(set(mv_calls["verify"]))
    equivalence._reset_caches()
    mv_calls["parse"].clear()
    assert cluster(["3", "3.0", "1,000", "1000", "0.5", "1/2"]) == [[0, 1], [2, 3], [4, 5]]
    assert mv_calls["parse"] == []  # numbers compare as numbers


def burn(seconds: float) -> None:
    """Busy for `seconds` of this thread's CPU time (the budget counts CPU, not waiting)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_huge_powers_never_reach_math_verify(mv_calls):
    """Seen in the README demo: sympy built 10**1982279 for one comparison (200 s, which no
    budget can interrupt).  Exponents of five or more digits match by key only."""
    answers = ["1E1982279", "1E1E1E13E", "6", "1982279", "2^{50000}", "2^{2024}", "2^{2024}"]
    best, votes = vote(answers, "math")
    assert votes["2^{2024}"] == 2 and best == 5
    assert not any("E1982279" in t or "50000" in t for t in mv_calls["parse"])
    assert "2^{2024}" in mv_calls["parse"]  # a year in the exponent still goes to math-verify


def test_math_verify_work_per_answer_is_budgeted(monkeypatch):
    equivalence._reset_caches()
    equivalent("x^2", "x^3")  # warm math-verify up
    monkeypatch.setattr(equivalence, "MATH_BUDGET_S", 0.2)
    verified = []

    def slow_verify(a, b):
        verified.append((a, b))
        burn(0.15)
        return False

    monkeypatch.setattr(equivalence, "_mv_verify", slow_verify)
    distinct = [f"x^{i}+{i}" for i in range(2, 8)]
    assert len(cluster(distinct)) == len(distinct)
    # without a budget: 15 pairs; with it each answer stops after two slow comparisons
    assert 0 < len(verified) <= len(distinct)
    # a parse slower than the budget makes the answer unparsable (compared by key only)
    equivalence._reset_caches()
    monkeypatch.setattr(equivalence, "_mv_parse", lambda t: burn(0.25) or [t])
    assert not equivalent("y^2", "y\\cdot y")
    assert equivalence._parsed == {"y^2": None, "y\\cdot y": None}
    equivalence._reset_caches()


# ------------------------------------------------------------------ threads


def test_math_verify_works_in_worker_threads():
    equivalence._reset_caches()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(equivalent, "1/2", "\\frac{1}{2}").result()


def test_vote_from_several_threads_agrees_with_one_thread():
    population = MATH + PROSE + ["\\frac{2}{4}", "x^{2} + 2x + 1", "Paris", "paris"]
    equivalence._reset_caches()
    expected = vote(population)
    equivalence._reset_caches()
    barrier = threading.Barrier(6)

    def work(reverse_first: bool) -> list[tuple]:
        barrier.wait()  # start together, on cold caches
        out = []
        for _ in range(3):
            if reverse_first:
                vote(population[::-1])  # other pairs, other cache entries in between
            out.append(vote(population))
        return out

    with ThreadPoolExecutor(6) as pool:
        results = [r for f in [pool.submit(work, i % 2 == 0) for i in range(6)] for r in f.result()]
    assert all(r == expected for r in results)
    assert expected[1]["1/2"] == 4 and expected[1]["Paris"] == 2


# ------------------------------------------------------------------ general extraction


def test_general_extraction_reads_gsm8k_hashes():
    text = "Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips.\n#### 72"
    assert extract(text) == "72"
    assert extract("First try\n#### 70\nWait, recount.\n#### 1,234\n") == "1234"
    assert extract("#### $18.50.") == "18.50"
    # markdown h4 headings are not answers
    assert extract("#### Step 1: add\n#### 1. Count\n24 in total") == "24 in total"


def test_general_extraction_reads_the_answer_is():
    assert extract("48 + 24 = 72. The answer is 72.") == "72"
    assert extract("The answer is 70. No wait: 3.5 + 1 = 4.5.\nSo the answer is 4.5.") == "4.5"
    assert extract("The answer is **Paris**. It is the capital.") == "Paris"
    assert extract("the final answer is: $1,000") == "1,000"
    # more explicit markers still win, and without a marker the last line is the answer
    assert extract("The answer is 3.\n\\boxed{4}") == "4"
    assert extract("The answer is 3.\nANSWER: 5") == "5"
    assert extract("Some thoughts.\nParis") == "Paris"
