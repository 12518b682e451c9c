"""JSONL trajectory of a run, which is also its checkpoint.

Each line is one event: ``run`` (config, once per start), ``generation`` (one candidate, with
its step, slot, K parents, seed, usage and finish reason), ``step`` (written once a problem's
step is complete: its metrics, and the engine-busy figures so far when the engine keeps them),
``result`` (a problem's final choice, and ``stopped``: where and why it ended before step T)
and ``run_end`` (the engine's figures at the end of a
run: busy fraction, prefix-cache hits, placement over data-parallel ranks).  Every line is written
with a single ``write`` on an append-only file, so a killed run leaves at most one partial last
line, which :func:`load` ignores and :class:`TraceWriter` cuts off.  (A killed process loses
nothing it wrote; against a machine crash the file is also synced to disk at most once a second
at ``step`` events, and at the end.)  Resuming replays the trace (`Checkpoint`, the loop's input): finished
problems and steps are not run again, and generations of an unfinished step are reused.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .types import Candidate, Completion


#: seconds between fsyncs at step boundaries
SYNC_INTERVAL = 1.0


class TraceMismatch(ValueError):
    """The trace on disk was written by a run with a different configuration."""


def _complete_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parsed complete lines and the byte length they cover (a torn last line is excluded)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        if raw.strip():
            try:
                events.append(json.loads(raw))
            except json.JSONDecodeError:  # a torn line in the middle cannot happen; be lenient
                continue
    return events, end


def load(path: str | Path) -> list[dict[str, Any]]:
    """All complete events of a trace file."""
    return _complete_lines(Path(path))[0]


def generation_record(problem_id: str, cand: Candidate) -> dict[str, Any]:
    c = cand.completion
    return {
        "event": "generation", "problem": problem_id, "step": cand.step, "slot": cand.slot,
        "parents": cand.parents, "seed": cand.seed, "text": c.text, "reasoning": c.reasoning,
        "answer": cand.answer, "score": cand.score, "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason,
        "error": c.error, "retries": c.retries,
    }


def candidate_from_record(rec: dict[str, Any]) -> Candidate:
    comp = Completion(
        text=rec.get("text") or "", reasoning=rec.get("reasoning"),
        prompt_tokens=rec.get("prompt_tokens", 0), completion_tokens=rec.get("completion_tokens", 0),
        finish_reason=rec.get("finish_reason"), error=rec.get("error"), retries=rec.get("retries", 0),
    )
    return Candidate(step=rec["step"], slot=rec["slot"], parents=list(rec.get("parents", [])),
                     seed=rec.get("seed", 0), completion=comp, answer=rec.get("answer"),
                     score=rec.get("score"))


@dataclass
class Checkpoint:
    """What an earlier run of the same trace finished: the loop's input when it resumes.

    Finished steps come back with their metrics and generations; generations of a step that
    did not finish are reused one by one (a failed one is made again)."""

    generations: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)
    steps: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))

    @classmethod
    def from_events(cls, events: list[dict[str, Any]]) -> Checkpoint:
        state = cls()
        for ev in events:
            kind = ev.get("event")
            if kind == "generation":
                key = (ev["problem"], ev["step"], ev["slot"])
                # a failed generation is retried on resume; a success is kept
                if ev.get("error") is None or key not in state.generations:
                    state.generations[key] = ev
            elif kind == "step":
                state.steps[ev["problem"]][ev["step"]] = ev["metrics"]
        return state

    @classmethod
    def read(cls, path: str | Path, fingerprint: str) -> Checkpoint:
        """The checkpoint of the trace at `path` (empty when there is none), after checking
        that the trace was written with the same configuration."""
        path = Path(path)
        if not path.exists():
            return cls()
        events = load(path)
        runs = [e for e in events if e.get("event") == "run"]
        if runs and runs[0].get("fingerprint") != fingerprint:
            raise TraceMismatch(
                f"trace {path} was written with a different RSA configuration "
                f"({runs[0].get('config')}); pass a new trace path or resume=False")
        return cls.from_events(events)

    def finished_steps(self, problem_id: str, steps: int,
                       population: int) -> list[tuple[dict[str, Any], list[Candidate]]]:
        """(metrics, candidates) of each step of `problem_id` that an earlier run finished."""
        done = self.steps.get(problem_id, {})
        out = []
        for t in range(1, steps + 1):
            if t not in done:
                break
            recs = [self.generations.get((problem_id, t, s)) for s in range(population)]
            out.append((done[t], [candidate_from_record(r) for r in recs if r is not None]))
        return out

    def done_generation(self, problem_id: str, step: int, slot: int) -> Candidate | None:
        rec = self.generations.get((problem_id, step, slot))
        if rec is None or rec.get("error") is not None:
            return None
        return candidate_from_record(rec)


class TraceWriter:
    """Append-only JSONL writer.  `resume=True` keeps what is there (`Checkpoint.read` checks
    first that it was written with the same configuration)."""

    def __init__(self, path: str | Path, run_info: dict[str, Any], resume: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            end = _complete_lines(self.path)[1]
            with open(self.path, "r+b") as f:  # cut a line torn by a kill
                f.truncate(end)
        elif self.path.exists():
            self.path.unlink()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._synced = time.monotonic()
        self.write({"event": "run", **run_info})

    def write(self, event: dict[str, Any], sync: bool = False) -> None:
        line = (json.dumps(event, default=str, ensure_ascii=False) + "\n").encode()
        os.write(self._fd, line)
        if sync and time.monotonic() - self._synced >= SYNC_INTERVAL:
            os.fsync(self._fd)
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
