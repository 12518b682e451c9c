"""How busy an engine was kept: the engine-busy fraction, defined once for every engine.

A request is *inside the engine* from the moment it is handed to the engine (``LLM.generate``
called, ``AsyncLLM.generate`` iterated, an HTTP request sent) until its result is back.

- ``busy_s``: time with at least one request inside the engine;
- ``span_s``: time from the first request entering to the last one leaving (the engine's
  start-up and whatever ran before the first request are not in it);
- ``busy_fraction`` = ``busy_s / span_s``: 1.0 means some request was always in the engine;
  what is missing is time the engine sat idle waiting for Python (planning prompts, scoring
  answers, a step barrier);
- ``in_flight_mean``: requests inside, averaged over the span (how full the engine was kept,
  as far as the caller can see; an offline ``LLM.generate`` counts its whole batch until it
  returns).

    clock = BusyClock()
    clock.enter(); ...; clock.leave()
    clock.snapshot()  # {"busy_s": ..., "span_s": ..., "busy_fraction": ..., ...}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class BusyClock:
    """Counts requests inside an engine over time (not thread-safe: one event loop or one
    caller thread, as the engines use it)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget everything measured so far."""
        self.inside = 0
        self.inside_max = 0
        self.requests = 0
        self._first: float | None = None
        self._last = 0.0  # time of the last change of `inside`
        self._busy = 0.0
        self._area = 0.0  # integral of `inside` over time

    def _advance(self) -> float:
        now = self._clock()
        if self._first is not None:
            dt = now - self._last
            if self.inside:
                self._busy += dt
                self._area += dt * self.inside
        self._last = now
        return now

    def enter(self, n: int = 1) -> None:
        """`n` requests go into the engine."""
        now = self._advance()
        if self._first is None:
            self._first = now
        self.inside += n
        self.requests += n
        self.inside_max = max(self.inside_max, self.inside)

    def leave(self, n: int = 1) -> None:
        """`n` requests are back from the engine."""
        if n > self.inside:
            raise ValueError(f"{n} requests leave but only {self.inside} are inside")
        self._advance()
        self.inside -= n

    def snapshot(self) -> dict[str, Any]:
        """The figures so far (while requests are inside, up to now)."""
        if self._first is None:
            return {"busy_s": 0.0, "span_s": 0.0, "busy_fraction": None, "in_flight_mean": None,
                    "in_flight_max": 0, "requests": 0}
        busy, area, end = self._busy, self._area, self._last
        if self.inside:  # count the open stretch up to now without changing the state
            end = self._clock()
            busy += end - self._last
            area += (end - self._last) * self.inside
        span = end - self._first
        return {"busy_s": round(busy, 4), "span_s": round(span, 4),
                "busy_fraction": round(busy / span, 4) if span > 0 else None,
                "in_flight_mean": round(area / span, 2) if span > 0 else None,
                "in_flight_max": self.inside_max, "requests": self.requests}
