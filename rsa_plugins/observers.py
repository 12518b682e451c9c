"""What watches a run without steering it: the trace (which is also the checkpoint), the
progress bar, the forecast line and the caller's per-step callback.  The loop notifies each
observer of the run's start (with its worst-case forecast), the start of every step, every
generation, every finished step and every result."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .budget import Forecast
from .engines.base import Engine
from .trace import TraceWriter, generation_record
from .types import Candidate, Problem, RSAResult, Stop

OnStep = Callable[[Problem, int, dict[str, Any], list[Candidate]], "Awaitable[None] | None"]


@dataclass
class StepEvent:
    """A problem finished a step.

    `metrics`: the step's statistics (``stop`` names the rule when the problem ends there);
    `population`: the population after the step (the previous one when every generation of the
    step failed); `generations`: the step's own generations, failed ones included; `chosen`:
    the member of `population` the final selection would pick now (None: every member failed),
    with the `votes` per answer; `stopped`: set when the problem ends after this step.
    """

    problem: Problem
    step: int
    metrics: dict[str, Any]
    population: list[Candidate]
    generations: list[Candidate]
    chosen: int | None
    votes: dict[str, int]
    stopped: Stop | None = None


class Observer:
    """Base class: every notification is a no-op unless overridden."""

    def start(self, forecast: Forecast) -> None:
        """The run starts: what it may cost at most (`forecast.generations` planned,
        `forecast.restored` of them from a checkpoint)."""

    async def begin_step(self, problem: Problem, step: int) -> None:
        """A problem is about to send the requests of `step` (awaited in the problem's task,
        so context entered here, such as a transcript span, covers the step's calls)."""

    def generation(self, problem: Problem, cand: Candidate, restored: bool) -> None:
        """One generation was recorded (`restored`: taken from the checkpoint, not generated)."""

    async def step(self, event: StepEvent) -> None:
        """A problem finished a step."""

    def stopped(self, problem: Problem, stop: Stop, remaining: int) -> None:
        """A problem ends before its last step; `remaining` generations will not be made."""

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
        self.engine = engine

    def generation(self, problem: Problem, cand: Candidate, restored: bool) -> None:
        if not restored:
            self.writer.write(generation_record(problem.id, cand))

    async def step(self, step: StepEvent) -> None:
        event = {"event": "step", "problem": step.problem.id, "step": step.step,
                 "metrics": step.metrics}
        clock = self.engine.busy_clock if self.engine is not None else None
        if clock is not None:
            event["engine_busy"] = clock.snapshot()
        self.writer.write(event, sync=True)

    def result(self, result: RSAResult, selection: str) -> None:
        self.writer.write({"event": "result", "problem": result.problem.id,
                           "answer": result.answer, "chosen": result.chosen,
                           "votes": result.votes, "failed": result.failed,
                           "degraded_at": result.degraded_at, "correct": result.correct,
                           "stopped": asdict(result.stopped) if result.stopped else None,
                           "kind": result.kind,
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

    def start(self, forecast: Forecast) -> None:
        from tqdm.auto import tqdm

        self.started = time.monotonic()
        if forecast.generations:
            self.bar = tqdm(total=forecast.generations, initial=forecast.restored, unit="gen",
                            desc=self.desc, dynamic_ncols=True)

    def stopped(self, problem: Problem, stop: Stop, remaining: int) -> None:
        if self.bar is not None and remaining:
            self.bar.total -= remaining  # generations a stopped problem no longer needs
            self.bar.refresh()

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

    async def step(self, event: StepEvent) -> None:
        out = self.on_step(event.problem, event.step, event.metrics, event.population)
        if inspect.isawaitable(out):
            await out


class Announce(Observer):
    """Prints the run's worst case (calls, tokens, dollars where priced) and its budget on
    stderr before the first call."""

    def __init__(self, config: Any, stream: Any = None) -> None:
        self.config, self.stream = config, stream

    def start(self, forecast: Forecast) -> None:
        print(forecast.line(self.config), file=self.stream or sys.stderr, flush=True)


def show_progress(progress: bool | None) -> bool:
    """Whether to show a bar: as asked, else when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else bool(progress)
