"""Which data-parallel rank of one vLLM engine serves a request.

vLLM's own balancer (``AsyncLLM`` with ``data_parallel_size`` > 1) sends each request to the
least-loaded engine core, whatever its prompt: the N aggregation prompts of one problem, which
share their whole head (instructions, problem text, often the first candidate), land on
different cores and each core prefills the shared part again.  `Placement` keeps requests that
share a key (the loop sets one per problem) on one rank while any of them is in flight, and
sends a key with nothing in flight to the rank with the fewest requests in flight.  So a
problem's step stays on one rank (its prefix cache is reused), and each new step goes wherever
there is room (load stays balanced at step granularity).  Requests without a key are spread
the same way, one by one.  The same placement keeps a problem on one of several servers
behind a LiteLLM Router (`rsa_plugins.engines.router`), among those the Router lets serve.
"""

from __future__ import annotations

from collections.abc import Sequence


class Placement:
    """Rank choice for `ranks` data-parallel engine cores (`pick`, then `done` per request)."""

    def __init__(self, ranks: int) -> None:
        if ranks < 1:
            raise ValueError(f"ranks must be >= 1, got {ranks}")
        self.ranks = ranks
        self.in_flight = [0] * ranks
        #: requests sent to each rank so far
        self.placed = [0] * ranks
        self._keys: dict[str, list[int]] = {}  # key -> [rank, requests in flight]
        self._next = 0  # rotates ties, so equal loads do not always favour rank 0

    def pick(self, key: str | None = None, allowed: Sequence[int] | None = None) -> int:
        """The rank for one request with `key` (counted in flight until `done`); `allowed`:
        the ranks that may serve now (all when None; a key held by another moves)."""
        held = self._keys.get(key) if key is not None else None
        if held is not None and (allowed is None or held[0] in allowed):
            rank = held[0]
            held[1] += 1
        else:
            ranks = range(self.ranks) if allowed is None else allowed
            order = sorted(ranks, key=lambda r: (r - self._next) % self.ranks)
            rank = min(order, key=lambda r: self.in_flight[r])
            self._next = (rank + 1) % self.ranks
            if held is not None:  # its rank may not serve now: the key moves, its count with it
                held[0], held[1] = rank, held[1] + 1
            elif key is not None:
                self._keys[key] = [rank, 1]
        self.in_flight[rank] += 1
        self.placed[rank] += 1
        return rank

    def done(self, rank: int, key: str | None = None) -> None:
        """A request picked for `rank` with `key` is back (its key may have moved since)."""
        self.in_flight[rank] -= 1
        held = self._keys.get(key) if key is not None else None
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                del self._keys[key]
