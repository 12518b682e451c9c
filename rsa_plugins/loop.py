"""The RSA loop: the paper's algorithm box, one problem at a time (`RSALoop._solve`).

    sample N candidates of the problem                          (step 1)
    for t = 2 .. T:
        for each of the N slots: draw K distinct members of the previous population
                                 and generate one aggregation of them
        the N aggregations replace the population
    select the final answer from the last population

Three policies are consulted between steps, each at one named point: whether the problem goes
on (`policies.EarlyStop`; default: always, the paper), where a slot's subset draws from
(`policies.draw`: the whole population, or its island) and whether the run can pay for the step
(`budget`, through the `schedule.Scheduler`).  Around the box, not inside it: resuming (the
`trace.Checkpoint` is the loop's input), building and fitting requests (`plan`), batching
(problems move on independently; ``lockstep=True`` or an engine that prefers it sends each
step of every problem as one engine call, like the paper's code) and observers (trace, progress,
the forecast line, `on_step`), which watch but never steer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__
from .answers import detect_kind, equivalent, extract
from .equivalence import quick
from .budget import Budget, Cost, forecast, spent, worst_case
from .config import RSAConfig
from .engines.base import Engine
from .metrics import step_metrics
from .observers import (Announce, Observer, OnStep, ProgressBar, StepCallback, StepEvent,
                        TraceObserver, show_progress)
from .plan import Job, aggregation_jobs, sampling_jobs
from .policies import EarlyStop, draw, stop_reason
from .schedule import Scheduler
from .selection import select
from .state import ProblemState, restore
from .trace import Checkpoint
from .types import Candidate, Completion, Problem, RSAResult, Stop


@dataclass
class _Run:
    scheduler: Scheduler
    observers: list[Observer]
    early_stop: EarlyStop


class RSALoop:
    """Runs RSA for a batch of problems on one engine.

    `trace`: JSONL path for the trajectory and checkpoints (resumed when it exists and `resume`).
    `progress`: a bar over generations (default: when stderr is a terminal).
    `announce`: print the run's worst case and budget before the first call (default: with the
    progress bar, or when a budget is set).
    `on_step(problem, step, metrics, population)`: called (or awaited) after each finished step.
    `observers`: more `Observer`s to notify.
    """

    def __init__(self, engine: Engine, config: RSAConfig | None = None, *,
                 trace: str | Path | None = None, resume: bool = True,
                 progress: bool | None = None, on_step: OnStep | None = None,
                 run_info: dict[str, Any] | None = None,
                 observers: Sequence[Observer] = (), announce: bool | None = None) -> None:
        self.engine = engine
        self.config = config or RSAConfig()
        self.trace_path, self.resume, self.progress = trace, resume, progress
        self.announce = announce
        self.run_info = run_info or {}
        self.observers: list[Observer] = list(observers)
        if on_step is not None:
            self.observers.append(StepCallback(on_step))

    async def run(self, problems: Sequence[Problem]) -> list[RSAResult]:
        """Run every problem to its final population and pick an answer for each."""
        cfg, engine = self.config, self.engine
        checkpoint, observers = Checkpoint(), list(self.observers)
        if self.trace_path is not None:
            if self.resume:
                checkpoint = Checkpoint.read(self.trace_path, cfg.fingerprint())
            info = {"version": __version__, "config": cfg.to_dict(),
                    "fingerprint": cfg.fingerprint(), **engine.describe(), **self.run_info}
            observers.insert(0, TraceObserver(self.trace_path, info, self.resume, engine))
        shown = show_progress(self.progress)
        if shown:
            observers.append(ProgressBar())
        if self.announce if self.announce is not None else (shown or cfg.budgeted):
            observers.insert(0, Announce(cfg))
        try:
            await engine.prepare()
            states = [restore(ProblemState(p, self._kind(p)), checkpoint, cfg, observers)
                      for p in _unique_ids(problems)]
            restored = sum(len(s.restored) for s in states)
            fc = forecast(engine, cfg, [s.problem for s in states], restored,
                          fresh=[s.problem for s in states if not s.history])
            budget = Budget(cfg, engine) if cfg.budgeted else None
            if budget is not None:
                budget.check_first_steps(fc.first_step, fc.problems)
                budget.settle(Cost(), spent(engine, [c.completion for s in states
                                                     for c in s.restored], Cost()))
            for o in observers:
                o.start(fc)
            lockstep = cfg.lockstep or engine.prefers_lockstep
            run = _Run(Scheduler(engine, len(states), lockstep, budget), observers,
                       EarlyStop.of(cfg))
            return list(await asyncio.gather(*(self._solve(run, s) for s in states)))
        finally:
            for o in observers:
                o.close()

    async def _solve(self, run: _Run, s: ProblemState) -> RSAResult:
        """One problem through the paper's box (see the module's docstring)."""
        cfg = self.config
        try:
            for t in range(len(s.history) + 1, cfg.steps + 1):   # after what was restored
                if s.stop is not None:                               # restored as stopped
                    break
                if t == 1:
                    jobs = await self._sample(s)                     # N samples of the problem
                else:                                                # per slot, K distinct
                    subsets = draw(cfg, s.problem.id, t, s.population)  # members (of its island)
                    jobs = await self._aggregate(s, t, subsets)      # and their aggregation
                cost = await self._pay(run, s, t, jobs)             # can the run pay for it?
                if cost is None:
                    break
                used = await self._generate(run, s, t, jobs)
                if run.scheduler.budget is not None:
                    run.scheduler.settle(cost, spent(self.engine, used, cost))
                if await self._close(run, s, t):                     # the N replace the
                    break                                            # population; go on?
            return self._finish(run, s)                              # select
        finally:
            await run.scheduler.leave()

    # ----------------------------------------------------------------- one step

    async def _sample(self, s: ProblemState) -> list[Job]:
        todo = [slot for slot in range(self.config.population) if slot not in s.current]
        return await sampling_jobs(self.engine, self.config, s.problem, todo) if todo else []

    async def _aggregate(self, s: ProblemState, t: int, subsets: list[list[int]]) -> list[Job]:
        todo = [slot for slot in range(self.config.population) if slot not in s.current]
        return await aggregation_jobs(self.engine, self.config, s.problem, s.kind, t,
                                      s.population, subsets, todo)

    async def _pay(self, run: _Run, s: ProblemState, t: int, jobs: list[Job]) -> Cost | None:
        """The worst case of step `t` if the run pays for it (the first step always: checked
        up front), else None: the problem stops."""
        if run.scheduler.budget is None:
            return Cost()
        cost = worst_case(self.engine, self.config, [j.request for j in jobs if j.request])
        share = s.history[-1]["majority_share"] if s.history else 0.0
        if await run.scheduler.pay(s.problem.id, share, self.config.steps - t + 1, cost,
                                   first=t == 1):
            return cost
        await self._stop(run, s, "budget")
        return None

    async def _generate(self, run: _Run, s: ProblemState, t: int, jobs: list[Job]
                        ) -> list[Completion]:
        """Send the step's requests; each completion becomes a candidate as soon as it is back.
        Returns the completions the engine made."""
        sent = [j for j in jobs if j.request is not None]
        made: list[Completion] = []
        for j in jobs:
            if j.request is None:
                self._record(run, s, t, j, [Completion(error=j.error) for _ in j.slots])

        def back(i: int, comps: list[Completion]) -> None:
            made.extend(comps)
            self._record(run, s, t, sent[i], comps)

        if sent:
            for o in run.observers:
                await o.begin_step(s.problem, t)
            await run.scheduler.generate(t, [j.request for j in sent if j.request], back)
        return made

    def _record(self, run: _Run, s: ProblemState, t: int, job: Job, comps: list[Completion]) -> None:
        """Each completion of `job` becomes a candidate of step `t`, with its answer and score."""
        s.cut += int(job.cut)
        p = s.problem
        seed = job.request.seed if job.request is not None else 0
        for slot, comp in zip(job.slots, comps):
            cand = Candidate(step=t, slot=slot, parents=job.parents, seed=seed, completion=comp)
            if comp.ok:
                cand.answer = comp.answer if comp.answer is not None else extract(
                    f"{p.prefill or ''}{comp.text}", s.kind, len(p.choices or []) or None)
                cand.score = self._score(s, cand)
            s.current[slot] = cand
            s.usage.add(comp)
            for o in run.observers:
                o.generation(p, cand, False)

    async def _close(self, run: _Run, s: ProblemState, t: int) -> bool:
        """The step's metrics and selection; its candidates replace the population.  True when
        the problem stops here: its early-stop rule holds, or every generation of the step
        failed (then the previous population, if any member of it succeeded, stays)."""
        cfg = self.config
        gens = [s.current[slot] for slot in sorted(s.current)]
        s.current, cut, s.cut = {}, s.cut, 0
        replaced = any(c.completion.ok for c in gens) or not any(c.completion.ok
                                                                 for c in s.population)

        def summary() -> tuple[dict[str, Any], tuple[int | None, dict[str, int]] | None]:
            return (step_metrics(t, gens, s.kind, cfg.population, cut, cfg.aggregation_size),
                    select(gens, s.kind, cfg.selection, cfg.seed, s.problem.id) if replaced
                    else None)

        # math-verify work leaves the event loop; numbers and plain answers need none
        metrics, chosen = summary() if quick([c.answer for c in gens], s.kind) else \
            await asyncio.to_thread(summary)
        if replaced:
            s.population, s.chosen = gens, chosen
        else:
            metrics["kept_previous"] = True
            s.degraded_at = t
        s.history.append(metrics)
        reason = stop_reason(run.early_stop, s.history, gens)
        if reason is not None and t < cfg.steps:
            metrics["stop"] = reason
        chosen, votes = s.chosen or (None, {})
        event = StepEvent(s.problem, t, metrics, s.population, gens, chosen, votes)
        for o in run.observers:
            await o.step(event)
        if reason is not None and t < cfg.steps:
            await self._stop(run, s, reason)
        return s.stop is not None

    async def _stop(self, run: _Run, s: ProblemState, reason: str) -> None:
        s.stop = Stop(len(s.history), reason)
        left = (self.config.steps - len(s.history)) * self.config.population
        for o in run.observers:
            o.stopped(s.problem, s.stop, left)

    # ----------------------------------------------------------------- results

    def _score(self, s: ProblemState, cand: Candidate) -> float | None:
        p = s.problem
        if p.scorer is not None:
            try:
                return float(p.scorer(cand.answer, cand.completion.text, p))
            except Exception:  # noqa: BLE001 - a scorer crash means "not correct"
                return 0.0
        if p.target is None:
            return None
        targets = p.target if isinstance(p.target, (list, tuple)) else [p.target]
        return float(any(equivalent(cand.answer, t, s.kind) for t in targets))

    def _finish(self, run: _Run, s: ProblemState) -> RSAResult:
        cfg, pop = self.config, s.population
        chosen, votes = s.chosen or select(pop, s.kind, cfg.selection, cfg.seed, s.problem.id)
        cand = pop[chosen] if chosen is not None else None
        result = RSAResult(s.problem, cand.answer if cand else None,
                           cand.completion.text if cand else "", chosen, pop, s.history,
                           s.usage, votes, failed=cand is None, degraded_at=s.degraded_at,
                           stopped=s.stop, kind=s.kind)
        for o in run.observers:
            o.result(result, cfg.selection)
        return result

    def _kind(self, p: Problem) -> str:
        if p.kind != "auto":
            return p.kind
        if self.config.kind != "auto":
            return self.config.kind
        return detect_kind(p.prompt, p.choices)


def _unique_ids(problems: Sequence[Problem]) -> list[Problem]:
    seen: dict[str, int] = {}
    out = []
    for p in problems:
        if p.id in seen:
            seen[p.id] += 1
            p = Problem(**{**p.__dict__, "id": f"{p.id}-{seen[p.id]}"})
        else:
            seen[p.id] = 1
        out.append(p)
    return out
