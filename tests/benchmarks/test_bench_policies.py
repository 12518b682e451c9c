"""What the spending-less policies cost: 1,000 problems x N=16 x T=2 against an instant stub.

Every policy is on (an early-stop rule, a generations and a tokens budget) and the populations
never agree (the stub answers each request differently), so every problem runs every step and
every policy is consulted at every step.  The time spent inside the policies (the early-stop
rule, the subset draws, the budget's worst cases, payments and settlements) is summed by
wrapping them, and printed as a share of the run's wall time (goal: under 1%).
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

import rsa_plugins
from agree_stub import AgreeServer
from rsa_plugins import Problem, loop, schedule

PROBLEMS, N, T = 1000, 16, 2


def timed(spent: dict[str, float], name: str, fn):  # noqa: ANN001, ANN201
    if hasattr(fn, "__func__"):
        fn = fn.__func__

    def sync(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - t0

    async def coro(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        try:
            return await fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - t0

    import inspect

    return coro if inspect.iscoroutinefunction(fn) else sync


@pytest.mark.benchmark
def test_policies_cost_under_one_percent_of_wall_time(monkeypatch, show):
    spent: dict[str, float] = defaultdict(float)
    monkeypatch.setattr(loop, "draw", timed(spent, "draw", loop.draw))
    monkeypatch.setattr(loop, "worst_case", timed(spent, "worst_case", loop.worst_case))
    monkeypatch.setattr(loop, "spent", timed(spent, "spent", loop.spent))
    monkeypatch.setattr(loop.EarlyStop, "reason", timed(spent, "early_stop",
                                                        loop.EarlyStop.reason))
    monkeypatch.setattr(schedule.Scheduler, "settle", timed(spent, "settle",
                                                            schedule.Scheduler.settle))
    # `pay` waits for other problems in a tight budget; here the budget is ample, so it never
    # waits and its time is its own work
    monkeypatch.setattr(schedule.Scheduler, "pay", timed(spent, "pay", schedule.Scheduler.pay))
    problems = [Problem(f"Problem q{i} agrees from step 0. Put the answer in \\boxed{{}}.",
                        id=f"q{i}") for i in range(PROBLEMS)]
    with AgreeServer() as server:
        t0 = time.perf_counter()
        results = rsa_plugins.run(problems, model="hosted_vllm/agree", api_base=server.base_url,
                                  population=N, aggregation_size=4, steps=T, max_tokens=32,
                                  use_n=False, progress=False, early_stop="consensus",
                                  budget_generations=10**9, budget_tokens=10**12)
        wall = time.perf_counter() - t0
        made = len(server.stats())
    share = sum(spent.values()) / wall
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(spent.items()))
    show(f"\npolicies: {sum(spent.values()):.2f} s of {wall:.1f} s wall = {share:.2%} "
         f"({PROBLEMS} problems x N={N} x T={T}, {made} generations; {parts})")
    assert made == PROBLEMS * N * T, "nothing stopped: every policy ran at every step"
    assert all(r.stopped is None and len(r.steps) == T for r in results)
    assert set(spent) == {"draw", "worst_case", "spent", "early_stop", "settle", "pay"}
