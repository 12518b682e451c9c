"""Seeds and subset draws: pure functions of hashes, so a run's draws do not depend on the
order in which generations finish, and a resumed run draws exactly what an uninterrupted one
would."""

from __future__ import annotations

import hashlib
import random


def derive_seed(*parts: object) -> int:
    """A 31-bit integer from hashing `parts` (stable across processes and platforms)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)


def draw_subsets(seed: int, problem_id: str, step: int, population: int, size: int,
                 count: int) -> list[list[int]]:
    """`count` independent draws of `size` distinct indices out of `population`."""
    rng = random.Random(derive_seed(seed, problem_id, step, "subsets"))
    return [rng.sample(range(population), size) for _ in range(count)]
