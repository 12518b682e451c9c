"""Where a run's problems meet: the engine (lockstep batches) and the budget.

Each problem walks its own path through the algorithm (`RSALoop._solve`); the scheduler is the
only place they wait for each other.  It counts the problems that are working (neither waiting
here nor finished); when none is, it

1. sends the lockstep batch: every waiting problem's requests of the earliest waiting step, as
   one engine call (the paper's batching; barrier-free runs send each problem's step at once);
2. else decides the budget: when the run cannot pay for every remaining step, the waiting
   problems are served lowest majority share first: a problem gets its next step when the
   budget can pay for it after every step still ahead of the problems served before it (their
   worst cases); the others wait for what those steps leave, and stop when nothing is left in
   flight.

Nothing is in flight while a budget decision is made, so it sees every problem that wants a step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .budget import Budget, Cost
from .engines.base import Engine
from .types import Completion, Request


#: called with (index of the request, its completions) as each request comes back
Back = Callable[[int, list[Completion]], None]


@dataclass(eq=False)
class _Batch:
    step: int
    requests: Sequence[Request]
    future: asyncio.Future[list[list[Completion]]]


@dataclass(eq=False)
class _Ask:
    key: str
    share: float
    cost: Cost
    remaining: int
    future: asyncio.Future[bool]


class Scheduler:
    """Shares one engine and one budget between the `problems` of a run."""

    def __init__(self, engine: Engine, problems: int, lockstep: bool,
                 budget: Budget | None = None) -> None:
        self.engine, self.lockstep, self.budget = engine, lockstep, budget
        self.working = self.live = problems
        self._batches: list[_Batch] = []
        self._asks: list[_Ask] = []

    async def generate(self, step: int, requests: Sequence[Request], back: Back) -> None:
        """Send one problem's requests of `step`; `back(i, completions)` as each returns.

        Barrier-free, each request is its own engine call (its candidate is recorded as soon as
        it is done); in lockstep, the requests join the step's one batch."""
        if not self.lockstep:
            async def one(i: int, request: Request) -> None:
                back(i, (await self.engine.generate([request]))[0])

            await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
            return
        batch = _Batch(step, requests, asyncio.get_running_loop().create_future())
        self._batches.append(batch)
        await self._idle()
        for i, comps in enumerate(await batch.future):
            back(i, comps)

    async def pay(self, key: str, share: float, remaining: int, cost: Cost,
                  first: bool = False) -> bool:
        """Whether the run pays for a step of worst case `cost` (it is then reserved).

        `share`: the problem's latest majority share (its priority, lowest first; ties in the
        order of `key`); `remaining`: steps the problem could still take, so that what every
        problem still needs can be estimated.  A `first` step is always paid (the loop checks
        before the first call that the budget covers every problem's first step)."""
        if self.budget is None:
            return True
        if first:
            self.budget.reserve(cost)
            return True
        if not self._asks and self.budget.fits(cost.times(remaining * self.live)):
            self.budget.reserve(cost)  # plenty left for every problem: no need to choose
            return True
        ask = _Ask(key, share, cost, remaining, asyncio.get_running_loop().create_future())
        self._asks.append(ask)
        await self._idle()
        return await ask.future

    def settle(self, reserved: Cost, used: Cost) -> None:
        """A paid step is done: what it used replaces its reservation."""
        if self.budget is not None:
            self.budget.settle(reserved, used)

    async def leave(self) -> None:
        """A problem has finished."""
        self.live -= 1
        await self._idle()

    async def _idle(self) -> None:
        """The calling problem waits (or has left): act if no problem is working any more."""
        self.working -= 1
        if self.working:
            return
        if self._batches:
            await self._send()
        elif self._asks:
            self._decide()

    async def _send(self) -> None:
        step = min(b.step for b in self._batches)
        now = [b for b in self._batches if b.step == step]
        self._batches = [b for b in self._batches if b.step != step]
        self.working += len(now)
        try:
            outputs = iter(await self.engine.generate([r for b in now for r in b.requests]))
        except BaseException as exc:
            for b in now:
                b.future.set_exception(exc)
            return
        for b in now:
            b.future.set_result([next(outputs) for _ in b.requests])

    def _decide(self) -> None:
        assert self.budget is not None
        granted, ahead = [], Cost()  # `ahead`: later steps of the problems served first
        for ask in sorted(self._asks, key=lambda a: (a.share, a.key)):
            if self.budget.fits(ahead + ask.cost):
                self.budget.reserve(ask.cost)
                granted.append(ask)
                ahead = ahead + ask.cost.times(ask.remaining - 1)
        answered = granted or self._asks  # nothing fits and nothing is in flight: all stop
        for ask in answered:
            ask.future.set_result(ask in granted)
        self._asks = [a for a in self._asks if a not in answered]
        self.working += len(answered)
