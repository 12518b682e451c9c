"""What watches a run without steering it: the trace (which is also the checkpoint), the
progress bar and the caller's per-step callback.  The loop notifies each observer of the run's
start, every generation, every finished step and every result."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .engines.base import Engine
from .trace import ResumeState, TraceWriter, generation_record
from .types import Candidate, Problem, RSAResult

OnStep = Callable[[Problem, int, dict[str, Any], list[Candidate]], "Awaitable[None] | None"]


class Observer:
    """Base class: every notification is a no-op unless overridden."""

    def start(self, total: int, restored: int) -> None:
        """The run starts: `total` generations planned, `restored` of them from a checkpoint."""

    def generation(self, problem: Problem, cand: Candidate, restored: bool) -> None:
        """One generation was recorded (`restored`: taken from the checkpoint, not generated)."""

    async def step(self, problem: Problem, step: int, metrics: dict[str, Any],
                   population: list[Candidate]) -> None:
        """A problem finished a step."""

    def result(self, result: RSAResult, selection: str) -> None:
        """A problem's final answer was chosen."""

    def close(self) -> None:
        """The run ended (also after an error)."""


class TraceObserver(Observer):
    """Writes the JSONL trajectory; `resume` holds what an earlier run of the trace finished.

    With an `engine`, each ``step`` event carries the engine-busy figures at that moment
    (``engine_busy``: `rsa_plugins.busy`, cumulative since the engine's first request) when
    the engine keeps them, and a ``run_end`` event closes the run with the engine's `stats()`.
    """

    def __init__(self, path: str | Path, run_info: dict[str, Any], resume: bool = True,
                 engine: Engine | None = None) -> None:
        self.writer = TraceWriter(path, run_info, resume=resume)
        self.resume: ResumeState = self.writer.state
        self.engine = engine

    def generation(self, problem: Problem, cand: Candidate, restored: bool) -> None:
        if not restored:
            self.writer.write(generation_record(problem.id, cand))

    async def step(self, problem: Problem, step: int, metrics: dict[str, Any],
                   population: list[Candidate]) -> None:
        event = {"event": "step", "problem": problem.id, "step": step, "metrics": metrics}
        clock = self.engine.busy_clock if self.engine is not None else None
        if clock is not None:
            event["engine_busy"] = clock.snapshot()
        self.writer.write(event, sync=True)

    def result(self, result: RSAResult, selection: str) -> None:
        self.writer.write({"event": "result", "problem": result.problem.id,
                           "answer": result.answer, "chosen": result.chosen,
                           "votes": result.votes, "failed": result.failed,
                           "degraded_at": result.degraded_at, "correct": result.correct,
                           "selection": selection}, sync=True)

    def close(self) -> None:
        if self.engine is not None:
            stats = self.engine.stats()
            if stats:
                self.writer.write({"event": "run_end", "engine": stats})
        self.writer.close()


class ProgressBar(Observer):
    """A tqdm bar over generations with the generated tokens per second."""

    def __init__(self, desc: str = "RSA") -> None:
        self.desc, self.bar, self.tokens, self.started = desc, None, 0, time.monotonic()

    def start(self, total: int, restored: int) -> None:
        from tqdm.auto import tqdm

        self.started = time.monotonic()
        if total:
            self.bar = tqdm(total=total, initial=restored, unit="gen", desc=self.desc,
                            dynamic_ncols=True)

    def generation(self, problem: Problem, cand: Candidate, restored: bool) -> None:
        if self.bar is None:
            return
        self.tokens += cand.completion.completion_tokens
        rate = self.tokens / max(1e-6, time.monotonic() - self.started)
        self.bar.set_postfix(tok_s=f"{rate:.0f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StepCallback(Observer):
    """Calls (or awaits) ``on_step(problem, step, metrics, population)`` after each step."""

    def __init__(self, on_step: OnStep) -> None:
        self.on_step = on_step

    async def step(self, problem: Problem, step: int, metrics: dict[str, Any],
                   population: list[Candidate]) -> None:
        out = self.on_step(problem, step, metrics, population)
        if inspect.isawaitable(out):
            await out


def show_progress(progress: bool | None) -> bool:
    """Whether to show a bar: as asked, else when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else bool(progress)
