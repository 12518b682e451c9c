"""One problem's progress through the loop, and how a checkpoint restores it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import RSAConfig
from .observers import Observer
from .policies import EarlyStop, stop_reason
from .trace import Checkpoint
from .types import Candidate, Problem, Stop, Usage


@dataclass
class ProblemState:
    """One problem's progress: its population, the step in progress, its finished steps' metrics
    (`history`), what it used, and where it stopped."""

    problem: Problem
    kind: str
    population: list[Candidate] = field(default_factory=list)
    current: dict[int, Candidate] = field(default_factory=dict)  # slot -> this step's member
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics of finished steps
    usage: Usage = field(default_factory=Usage)
    stop: Stop | None = None
    degraded_at: int | None = None
    cut: int = 0
    chosen: tuple[int | None, dict[str, int]] | None = None  # the selection of the population
    restored: list[Candidate] = field(default_factory=list)  # taken from the checkpoint


def restore(s: ProblemState, checkpoint: Checkpoint, cfg: RSAConfig,
            observers: list[Observer]) -> ProblemState:
    """`s` as the checkpoint left it: its finished steps replayed (with the same stopping
    decisions, which depend only on them) and the generations of its next step reused."""
    p, early_stop = s.problem, EarlyStop.of(cfg)
    for metrics, gens in checkpoint.finished_steps(p.id, cfg.steps, cfg.population):
        s.restored += gens
        for c in gens:
            s.usage.add(c.completion)
        s.history.append(metrics)
        if any(c.completion.ok for c in gens) or not any(c.completion.ok for c in s.population):
            s.population = gens
        else:
            s.degraded_at = len(s.history)
        reason = stop_reason(early_stop, s.history, gens)
        if reason is not None and len(s.history) < cfg.steps:
            s.stop = Stop(len(s.history), reason)
            break
    if s.stop is None and len(s.history) < cfg.steps:
        for slot in range(cfg.population):
            cand = checkpoint.done_generation(p.id, len(s.history) + 1, slot)
            if cand is not None:
                s.current[slot] = cand
                s.usage.add(cand.completion)
                s.restored.append(cand)
                for o in observers:
                    o.generation(p, cand, True)
    return s
