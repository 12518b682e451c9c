"""The RSA scheduler.

Every problem's population is generated concurrently.  By default each problem moves to its
next step as soon as its own N generations are done (no barrier across problems);
``lockstep=True`` instead sends every problem's requests for a step as one batch, like the
paper's code.  Subsets and request seeds come from hashes of (seed, problem id, step, slot), so
they do not depend on completion order and a resumed run draws exactly what an uninterrupted
one would.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .answers import detect_kind, equivalent, extract, vote
from .config import RSAConfig
from .engines.base import Engine
from .metrics import step_metrics
from .prompts import aggregation_prompt, candidate_view, messages, tail
from .trace import ResumeState, TraceWriter, candidate_from_record, generation_record
from .types import Candidate, Completion, Problem, Request, RSAResult, Usage

OnStep = Callable[[Problem, int, dict[str, Any], list[Candidate]], "Awaitable[None] | None"]

def derive_seed(*parts: object) -> int:
    """A 31-bit integer from hashing `parts` (stable across processes and platforms)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)


def draw_subsets(seed: int, problem_id: str, step: int, population: int, size: int,
                 count: int) -> list[list[int]]:
    """`count` independent draws of `size` distinct indices out of `population`."""
    rng = random.Random(derive_seed(seed, problem_id, step, "subsets"))
    return [rng.sample(range(population), size) for _ in range(count)]


@dataclass
class _Job:
    slots: list[int]
    request: Request | None  # None: the prompt could not be fitted; `error` says why
    parents: list[int] = field(default_factory=list)
    error: str | None = None
    fitted: bool = False


@dataclass
class _State:
    problem: Problem
    kind: str
    population: list[Candidate] = field(default_factory=list)
    current: dict[int, Candidate] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    next_step: int = 1
    fitted: int = 0
    failed: bool = False


class RSA:
    """Runs RSA for a batch of problems on one engine.

    `trace`: JSONL path for the trajectory and checkpoints (resumed when it exists and `resume`).
    `on_step(problem, step, metrics, population)`: called (or awaited) after each finished step.
    """

    def __init__(self, engine: Engine, config: RSAConfig | None = None, *,
                 trace: str | Path | None = None, resume: bool = True,
                 progress: bool | None = None, on_step: OnStep | None = None,
                 run_info: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.config = config or RSAConfig()
        self.trace_path, self.resume = trace, resume
        self.progress, self.on_step = progress, on_step
        self.run_info = run_info or {}
        self._writer: TraceWriter | None = None
        self._resumed = ResumeState()
        self._bar: Any = None
        self._started = 0.0
        self._tokens = 0

    # ----------------------------------------------------------------- driving

    async def run(self, problems: Sequence[Problem]) -> list[RSAResult]:
        """Run every problem to its final population and pick an answer for each."""
        states = [_State(p, self._kind(p)) for p in _unique_ids(problems)]
        lockstep = self.config.lockstep or self.engine.prefers_lockstep
        if self.trace_path is not None:
            info = {"version": __version__, "config": self.config.to_dict(),
                    "fingerprint": self.config.fingerprint(), **self.engine.describe(),
                    **self.run_info}
            self._writer = TraceWriter(self.trace_path, info, resume=self.resume)
            self._resumed = self._writer.state
            for s in states:
                self._restore(s)
        await self.engine.prepare()
        self._open_bar(states)
        try:
            if lockstep:
                await self._run_lockstep(states)
            else:
                await asyncio.gather(*(self._solve(s) for s in states))
            return [self._finish(s) for s in states]
        finally:
            if self._bar is not None:
                self._bar.close()
            if self._writer is not None:
                self._writer.close()

    async def _solve(self, state: _State) -> None:
        for t in range(state.next_step, self.config.steps + 1):
            jobs = await self._plan(state, t)
            if jobs is None:
                break
            if len(jobs) == 1:
                await self._run_jobs(state, t, jobs)
            else:
                await asyncio.gather(*(self._run_jobs(state, t, [j]) for j in jobs))
            await self._close_step(state, t)

    async def _run_lockstep(self, states: list[_State]) -> None:
        for t in range(1, self.config.steps + 1):
            active = [(s, await self._plan(s, t)) for s in states
                      if s.next_step == t and not s.failed]
            planned = [(s, j) for s, jobs in active if jobs is not None for j in jobs]
            requests = [j.request for _, j in planned if j.request is not None]
            outputs = iter(await self.engine.generate(requests) if requests else [])
            for s, j in planned:
                self._record(s, t, j, next(outputs) if j.request is not None else None)
            for s, jobs in active:
                if jobs is not None:
                    await self._close_step(s, t)

    async def _run_jobs(self, state: _State, step: int, jobs: list[_Job]) -> None:
        requests = [j.request for j in jobs if j.request is not None]
        outputs = iter(await self.engine.generate(requests) if requests else [])
        for j in jobs:
            self._record(state, step, j, next(outputs) if j.request is not None else None)

    # ----------------------------------------------------------------- one step

    async def _plan(self, state: _State, step: int) -> list[_Job] | None:
        """The requests still needed for `step` (None when the problem has no population left)."""
        cfg, p = self.config, state.problem
        todo = []
        for slot in range(cfg.population):
            done = self._resumed.done_generation(p.id, step, slot)
            if done is not None:
                state.current[slot] = done
                self._tick(done.completion)
            else:
                todo.append(slot)
        if step == 1:
            return await self._plan_first(state, todo)
        alive = [c for c in state.population if c.completion.ok]
        if not alive:
            state.failed = True
            return None
        k = min(cfg.aggregation_size, len(alive))
        subsets = draw_subsets(cfg.seed, p.id, step, len(alive), k, cfg.population)
        jobs = []
        if cfg.candidate_order == "index":
            subsets = [sorted(s) for s in subsets]
        for slot in todo:
            parents = [alive[i] for i in subsets[slot]]
            user, max_tokens, error, fitted = await self._fit_aggregation(state, parents)
            req = None if error else Request(
                messages=messages(p, user), seed=derive_seed(cfg.seed, p.id, step, slot),
                temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=max_tokens,
                extra=dict(cfg.sampling), problem=p, step=step, parents=parents)
            jobs.append(_Job([slot], req, [c.slot for c in parents], error, fitted))
        return jobs

    async def _plan_first(self, state: _State, todo: list[int]) -> list[_Job]:
        cfg, p = self.config, state.problem
        max_tokens, error = cfg.max_tokens, None
        if self.engine.max_model_len:
            used = await self.engine.prompt_tokens(messages(p, p.prompt))
            room = self.engine.max_model_len - used
            if room < 1:
                error = (f"the problem alone ({used} tokens) does not fit the model's context of "
                         f"{self.engine.max_model_len} tokens")
            max_tokens = min(max_tokens or room, room)

        def request(n: int, slot: int) -> Request | None:
            if error:
                return None
            return Request(messages=messages(p, p.prompt), seed=derive_seed(cfg.seed, p.id, 1, slot),
                           n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=max_tokens,
                           extra=dict(cfg.sampling), problem=p, step=1, parents=[])

        if self.engine.supports_n and len(todo) > 1 and not error:
            return [_Job(todo, request(len(todo), todo[0]))]
        return [_Job([s], request(1, s), error=error) for s in todo]

    async def _fit_aggregation(self, state: _State, parents: list[Candidate]
                               ) -> tuple[str, int | None, str | None, bool]:
        """Aggregation text and generation budget that fit the engine's context.

        First the generation budget shrinks (down to a quarter, at least 256 tokens), then the
        candidates are cut to their tails (tightened until the engine's count says it fits).
        Returns (text, max_tokens, error, fitted).
        """
        cfg, p, eng = self.config, state.problem, self.engine
        views = [candidate_view(c, cfg, state.kind, eng.tokenizer) for c in parents]
        text = aggregation_prompt(p, views, cfg, state.kind)
        limit = eng.max_model_len
        if not limit:
            return text, cfg.max_tokens, None, False

        async def size(user: str) -> int:
            return await eng.prompt_tokens(messages(p, user))

        want = cfg.max_tokens or max(256, limit // 4)
        floor = min(want, max(256, want // 4))
        bound = eng.prompt_tokens_bound(messages(p, text))
        if bound is not None and bound + want <= limit:  # fits for sure: no need to count
            return text, cfg.max_tokens, None, False
        used = await size(text)
        if used + want <= limit:
            return text, cfg.max_tokens and min(cfg.max_tokens, limit - used), None, False
        if used + floor <= limit:
            return text, limit - used, None, True
        frame = await size(aggregation_prompt(p, [""] * len(views), cfg, state.kind))
        per = (limit - floor - frame) // len(views) - 8
        for _ in range(4):  # a tail measured in estimated tokens may still be too long: tighten
            if per < 16:
                break
            cut = [tail(v, per, eng.tokenizer)[0] for v in views]
            text = aggregation_prompt(p, cut, cfg, state.kind)
            used = await size(text)
            if used + floor <= limit:
                return text, limit - used, None, True
            per = int(per * (limit - floor - frame) / max(1, used - frame)) - 8
        return text, None, (f"aggregation prompt cannot fit the context of {limit} tokens even "
                            f"with candidates cut to their tails; lower aggregation_size "
                            f"(now {len(views)}) or max_tokens, or use view='answer'"), True

    def _record(self, state: _State, step: int, job: _Job, comps: list[Completion] | None) -> None:
        if comps is None:
            comps = [Completion(error=job.error) for _ in job.slots]
        state.fitted += int(job.fitted)
        for slot, comp in zip(job.slots, comps):
            seed = job.request.seed if job.request is not None else 0
            cand = Candidate(step=step, slot=slot, parents=job.parents, seed=seed, completion=comp)
            if comp.ok:
                cand.answer = comp.answer if comp.answer is not None else extract(
                    comp.text, state.kind, len(state.problem.choices or []) or None)
                cand.score = self._score(state, cand)
            state.current[slot] = cand
            if self._writer is not None:
                self._writer.write(generation_record(state.problem.id, cand))
            self._tick(comp)

    async def _close_step(self, state: _State, step: int) -> None:
        cfg = self.config
        pop = [state.current[s] for s in sorted(state.current)]
        metrics = step_metrics(step, pop, state.kind, cfg.population, state.fitted)
        state.population, state.current, state.fitted = pop, {}, 0
        state.steps.append(metrics)
        state.next_step = step + 1
        if self._writer is not None:
            self._writer.write({"event": "step", "problem": state.problem.id, "step": step,
                                "metrics": metrics}, sync=True)
        if not any(c.completion.ok for c in pop):
            state.failed = True
        if self.on_step is not None:
            out = self.on_step(state.problem, step, metrics, pop)
            if inspect.isawaitable(out):
                await out

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

    def _finish(self, state: _State) -> RSAResult:
        cfg, p = self.config, state.problem
        usage = Usage()
        for m in state.steps:
            usage.prompt_tokens += m["prompt_tokens"]
            usage.completion_tokens += m["completion_tokens"]
            usage.calls += m["requested"]
            usage.failed += m["failed"]
            usage.retries += m["retries"]
        alive = [i for i, c in enumerate(state.population) if c.completion.ok]
        if not alive:
            result = RSAResult(p, None, "", None, state.population, state.steps, usage, {}, True)
        else:
            idx, votes = vote([state.population[i].answer for i in alive], state.kind)
            if cfg.selection == "random" or idx is None:
                idx = random.Random(derive_seed(cfg.seed, p.id, "final")).randrange(len(alive))
            chosen = alive[idx]
            cand = state.population[chosen]
            result = RSAResult(p, cand.answer, cand.completion.text, chosen, state.population,
                               state.steps, usage, votes, state.failed and not alive)
        if self._writer is not None:
            self._writer.write({"event": "result", "problem": p.id, "answer": result.answer,
                                "chosen": result.chosen, "votes": result.votes,
                                "failed": result.failed, "correct": result.correct,
                                "selection": cfg.selection}, sync=True)
        return result

    # ----------------------------------------------------------------- helpers

    def _kind(self, p: Problem) -> str:
        if p.kind != "auto":
            return p.kind
        if self.config.kind != "auto":
            return self.config.kind
        return detect_kind(p.prompt, p.choices)

    def _restore(self, state: _State) -> None:
        """Replay the finished steps of `state`'s problem from the trace."""
        done = self._resumed.steps.get(state.problem.id, {})
        pid = state.problem.id
        for t in range(1, self.config.steps + 1):
            if t not in done:
                break
            recs = [self._resumed.generations.get((pid, t, s)) for s in range(self.config.population)]
            state.population = [candidate_from_record(r) for r in recs if r is not None]
            state.steps.append(done[t])
            state.next_step = t + 1

    def _open_bar(self, states: list[_State]) -> None:
        total = len(states) * self.config.generations_per_problem
        restored = sum(len(s.steps) for s in states) * self.config.population
        show = self.progress
        if show is None:
            import sys

            show = sys.stderr.isatty()
        self._started = time.monotonic()
        if show and total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=restored, unit="gen", desc="RSA", dynamic_ncols=True)

    def _tick(self, comp: Completion) -> None:
        if self._bar is None:
            return
        self._tokens += comp.completion_tokens
        elapsed = max(1e-6, time.monotonic() - self._started)
        self._bar.set_postfix(tok_s=f"{self._tokens / elapsed:.0f}", refresh=False)
        self._bar.update(1)


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
