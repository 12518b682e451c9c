"""The final answer of a population: majority vote over equivalent answers, or a uniform pick."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .equivalence import vote
from .seeds import derive_seed
from .types import Candidate


def select(population: Sequence[Candidate], kind: str, selection: str, seed: int,
           problem_id: str) -> tuple[int | None, dict[str, int]]:
    """(index of the chosen member or None if every member failed, votes per answer).

    ``majority``: a member of the largest cluster of equivalent answers (ties: the cluster
    seen first; no answer at all: a uniform pick).  ``random``: a uniform pick among the
    members that did not fail (the paper's Pass@1 in expectation), seeded per problem.
    """
    alive = [i for i, c in enumerate(population) if c.completion.ok]
    if not alive:
        return None, {}
    idx, votes = vote([population[i].answer for i in alive], kind)
    if selection == "random" or idx is None:
        idx = random.Random(derive_seed(seed, problem_id, "final")).randrange(len(alive))
    return alive[idx], votes
