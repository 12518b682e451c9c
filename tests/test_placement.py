"""Data-parallel placement: one problem's requests in flight share a rank; new ones go where
there is room."""

from __future__ import annotations

import pytest

from rsa_plugins.engines.placement import Placement


def test_a_key_in_flight_stays_on_its_rank():
    p = Placement(2)
    a = [p.pick("a") for _ in range(4)]
    b = [p.pick("b") for _ in range(4)]
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0]
    assert p.in_flight == [4, 4] and p.placed == [4, 4]


def test_a_finished_key_goes_to_the_least_loaded_rank_next_time():
    p = Placement(2)
    first = [p.pick("a") for _ in range(3)]
    others = [p.pick("b") for _ in range(2)]  # the other rank, 2 in flight
    for r in first:
        p.done(r, "a")
    assert p.in_flight[first[0]] == 0
    p.pick("c")                               # least loaded: a's old rank (0 in flight)
    assert p.in_flight[first[0]] == 1
    for r in others:
        p.done(r, "b")
    again = p.pick("a")                       # a's step is over: placed anew, by load
    assert p.in_flight[again] == 1 and again == others[0]


def test_requests_without_a_key_are_spread():
    p = Placement(3)
    ranks = [p.pick() for _ in range(6)]
    assert sorted(ranks) == [0, 0, 1, 1, 2, 2]
    for r in ranks:
        p.done(r)
    assert p.in_flight == [0, 0, 0] and p.placed == [2, 2, 2]


def test_one_rank_takes_everything():
    p = Placement(1)
    assert {p.pick(k) for k in ("a", "b", None)} == {0}


def test_at_least_one_rank():
    with pytest.raises(ValueError):
        Placement(0)
