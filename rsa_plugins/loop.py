"""The RSA loop: the paper's algorithm box, step by step.

For each problem and step t: **plan** (step 1: N samples of the problem; later steps: for each
of the N slots, K distinct members of the previous population drawn at random, and one
aggregation request built from them, fitted to the context), **generate** (the engine), **record**
(each completion becomes a candidate with its answer and score) and **close** the step (its
metrics; the N new candidates replace the population).  After T steps the final answer is
selected from the last population.

By default each problem moves to its next step as soon as its own N generations are done (no
barrier across problems); ``lockstep=True`` (or an engine that prefers it) sends every problem's
requests for a step as one batch, like the paper's code.  Subsets and seeds are hashes of (seed,
problem id, step, slot), so they do not depend on completion order, and a resumed run draws
exactly what an uninterrupted one would.  The trace, the progress bar and `on_step` are observers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._version import __version__
from .answers import detect_kind, equivalent, extract
from .config import RSAConfig
from .engines.base import Engine
from .fit import Fit, fit_aggregation, fit_first
from .metrics import step_metrics
from .observers import Observer, OnStep, ProgressBar, StepCallback, TraceObserver, show_progress
from .prompts import aggregation_prompt, candidate_view
from .seeds import derive_seed, draw_subsets
from .selection import select
from .trace import ResumeState
from .types import Candidate, Completion, Problem, Request, RSAResult, Usage


@dataclass
class _Job:
    """One request of a step (several slots when the engine samples `n` at once)."""

    slots: list[int]
    fit: Fit
    parents: list[int] = field(default_factory=list)


@dataclass
class _State:
    """One problem's progress."""

    problem: Problem
    kind: str
    population: list[Candidate] = field(default_factory=list)
    current: dict[int, Candidate] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    next_step: int = 1
    cut: int = 0
    done: bool = False
    degraded_at: int | None = None


class RSALoop:
    """Runs RSA for a batch of problems on one engine.

    `trace`: JSONL path for the trajectory and checkpoints (resumed when it exists and `resume`).
    `progress`: a bar over generations (default: when stderr is a terminal).
    `on_step(problem, step, metrics, population)`: called (or awaited) after each finished step.
    `observers`: more `Observer`s to notify.
    """

    def __init__(self, engine: Engine, config: RSAConfig | None = None, *,
                 trace: str | Path | None = None, resume: bool = True,
                 progress: bool | None = None, on_step: OnStep | None = None,
                 run_info: dict[str, Any] | None = None,
                 observers: Sequence[Observer] = ()) -> None:
        self.engine = engine
        self.config = config or RSAConfig()
        self.trace_path, self.resume, self.progress = trace, resume, progress
        self.run_info = run_info or {}
        self.observers: list[Observer] = list(observers)
        if on_step is not None:
            self.observers.append(StepCallback(on_step))
        self._resumed = ResumeState()

    # ----------------------------------------------------------------- driving

    async def run(self, problems: Sequence[Problem]) -> list[RSAResult]:
        """Run every problem to its final population and pick an answer for each."""
        cfg = self.config
        states = [_State(p, self._kind(p)) for p in _unique_ids(problems)]
        observers = list(self.observers)
        if self.trace_path is not None:
            info = {"version": __version__, "config": cfg.to_dict(),
                    "fingerprint": cfg.fingerprint(), **self.engine.describe(), **self.run_info}
            tracer = TraceObserver(self.trace_path, info, resume=self.resume, engine=self.engine)
            self._resumed = tracer.resume
            observers.insert(0, tracer)
        if show_progress(self.progress):
            observers.append(ProgressBar())
        try:
            for s in states:
                self._restore(s)
            await self.engine.prepare()
            restored = sum(len(s.steps) for s in states) * cfg.population
            for o in observers:
                o.start(len(states) * cfg.generations_per_problem, restored)
            if cfg.lockstep or self.engine.prefers_lockstep:
                for t in range(1, cfg.steps + 1):
                    await self._step(observers, [s for s in states
                                                 if s.next_step == t and not s.done], t, True)
            else:
                await asyncio.gather(*(self._solve(observers, s) for s in states))
            return [await self._finish(observers, s) for s in states]
        finally:
            for o in observers:
                o.close()

    async def _solve(self, observers: list[Observer], state: _State) -> None:
        for t in range(state.next_step, self.config.steps + 1):
            if state.done:
                break
            await self._step(observers, [state], t, False)

    async def _step(self, observers: list[Observer], states: list[_State], t: int,
                    batch: bool) -> None:
        """Plan, generate, record and close step `t` of `states` (one engine call if `batch`)."""
        planned = [(s, job) for s in states for job in await self._plan(observers, s, t)]
        if batch:
            requests = [j.fit.request for _, j in planned if j.fit.request is not None]
            outputs = iter(await self.engine.generate(requests) if requests else [])
            for s, j in planned:
                self._record(observers, s, t, j, next(outputs) if j.fit.request else None)
        else:
            async def one(s: _State, j: _Job) -> None:
                out = (await self.engine.generate([j.fit.request]))[0] if j.fit.request else None
                self._record(observers, s, t, j, out)

            await asyncio.gather(*(one(s, j) for s, j in planned))
        for s in states:
            await self._close(observers, s, t)

    # ----------------------------------------------------------------- one step

    async def _plan(self, observers: list[Observer], state: _State, t: int) -> list[_Job]:
        """The requests still needed for step `t` (generations a checkpoint holds are reused)."""
        cfg, p = self.config, state.problem
        todo = []
        for slot in range(cfg.population):
            done = self._resumed.done_generation(p.id, t, slot)
            if done is None:
                todo.append(slot)
                continue
            state.current[slot] = done
            for o in observers:
                o.generation(p, done, True)
        if not todo:
            return []
        if t == 1:
            n = len(todo) if self.engine.supports_n and len(todo) > 1 else 1
            fit = await fit_first(self.engine, self._request(p, t, todo[0], p.messages(), n))
            if n > 1 and fit.request is not None:
                return [_Job(todo, fit)]
            if fit.request is None:
                return [_Job([slot], fit) for slot in todo]
            return [_Job([slot], Fit(self._request(p, t, slot, p.messages(), 1,
                                                   fit.request.max_tokens))) for slot in todo]
        alive = [c for c in state.population if c.completion.ok]
        k = min(cfg.aggregation_size, len(alive))
        subsets = draw_subsets(cfg.seed, p.id, t, len(alive), k, cfg.population)
        jobs = []
        for slot in todo:
            drawn = sorted(subsets[slot]) if cfg.candidate_order == "index" else subsets[slot]
            parents = [alive[i] for i in drawn]
            views = [candidate_view(c, cfg, p, state.kind, self.engine.tokenizer) for c in parents]

            def build(texts: list[str], slot: int = slot, parents: list[Candidate] = parents
                      ) -> Request:
                user = aggregation_prompt(p, texts, cfg, state.kind)
                return self._request(p, t, slot, p.messages(user), 1, parents=parents)

            jobs.append(_Job([slot], await fit_aggregation(self.engine, build, views),
                             [c.slot for c in parents]))
        return jobs

    def _request(self, p: Problem, t: int, slot: int, messages: list[dict[str, str]], n: int,
                 max_tokens: int | None = None, parents: list[Candidate] | None = None) -> Request:
        cfg = self.config
        return Request(messages=messages, seed=derive_seed(cfg.seed, p.id, t, slot), n=n,
                       temperature=cfg.temperature, top_p=cfg.top_p, stop=list(cfg.stop),
                       max_tokens=max_tokens or cfg.max_tokens, extra=dict(cfg.sampling),
                       chat=p.chat, parents=parents or [], cache_key=p.id)

    def _record(self, observers: list[Observer], state: _State, t: int, job: _Job,
                comps: list[Completion] | None) -> None:
        """Each completion of `job` becomes a candidate of step `t`, with its answer and score."""
        if comps is None:
            comps = [Completion(error=job.fit.error) for _ in job.slots]
        state.cut += int(job.fit.cut)
        p = state.problem
        seed = job.fit.request.seed if job.fit.request is not None else 0
        for slot, comp in zip(job.slots, comps):
            cand = Candidate(step=t, slot=slot, parents=job.parents, seed=seed, completion=comp)
            if comp.ok:
                text = f"{p.prefill or ''}{comp.text}"
                cand.answer = comp.answer if comp.answer is not None else extract(
                    text, state.kind, len(p.choices or []) or None)
                cand.score = self._score(state, cand)
            state.current[slot] = cand
            for o in observers:
                o.generation(p, cand, False)

    async def _close(self, observers: list[Observer], state: _State, t: int) -> None:
        """Step metrics; the new candidates replace the population.  A step in which every
        generation failed keeps the previous population (``kept_previous`` in its metrics) and
        ends the problem there."""
        cfg = self.config
        pop = [state.current[s] for s in sorted(state.current)]
        metrics = await asyncio.to_thread(step_metrics, t, pop, state.kind, cfg.population,
                                          state.cut)
        state.current, state.cut = {}, 0
        state.next_step = t + 1
        if any(c.completion.ok for c in pop):
            state.population = pop
        elif any(c.completion.ok for c in state.population):
            metrics["kept_previous"] = True
            state.degraded_at, state.done = t, True
        else:
            state.population, state.done = pop, True
        state.steps.append(metrics)
        for o in observers:
            await o.step(state.problem, t, metrics, state.population)

    # ----------------------------------------------------------------- results

    def _score(self, state: _State, cand: Candidate) -> float | None:
        p = state.problem
        if p.scorer is not None:
            try:
                return float(p.scorer(cand.answer, cand.completion.text, p))
            except Exception:  # noqa: BLE001 - a scorer crash means "not correct"
                return 0.0
        if p.target is None:
            return None
        targets = p.target if isinstance(p.target, (list, tuple)) else [p.target]
        return float(any(equivalent(cand.answer, t, state.kind) for t in targets))

    async def _finish(self, observers: list[Observer], state: _State) -> RSAResult:
        cfg, p, pop = self.config, state.problem, state.population
        usage = Usage()
        for m in state.steps:
            usage.prompt_tokens += m["prompt_tokens"]
            usage.completion_tokens += m["completion_tokens"]
            usage.calls += m["requested"]
            usage.failed += m["failed"]
            usage.retries += m["retries"]
        chosen, votes = await asyncio.to_thread(select, pop, state.kind, cfg.selection, cfg.seed,
                                                p.id)
        cand = pop[chosen] if chosen is not None else None
        result = RSAResult(p, cand.answer if cand else None, cand.completion.text if cand else "",
                           chosen, pop, state.steps, usage, votes, failed=cand is None,
                           degraded_at=state.degraded_at)
        for o in observers:
            o.result(result, cfg.selection)
        return result

    # ----------------------------------------------------------------- helpers

    def _kind(self, p: Problem) -> str:
        if p.kind != "auto":
            return p.kind
        if self.config.kind != "auto":
            return self.config.kind
        return detect_kind(p.prompt, p.choices)

    def _restore(self, state: _State) -> None:
        """Replay the finished steps of `state`'s problem from the checkpoint."""
        cfg = self.config
        for metrics, pop in self._resumed.finished_steps(state.problem.id, cfg.steps,
                                                          cfg.population):
            if metrics.get("kept_previous"):
                state.degraded_at, state.done = len(state.steps) + 1, True
            else:
                state.population = pop
                state.done = not any(c.completion.ok for c in pop)
            state.steps.append(metrics)
            state.next_step = len(state.steps) + 1


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
