"""Two of the three policies the loop consults between steps: whether a problem goes on
(`EarlyStop`) and where a slot's subset may draw from (`draw`, with islands).  The third,
whether the run can pay for the next step, is `rsa_plugins.budget`.

Both read only what a step already computed (its metrics, its population), so a finished trace
can be replayed under another rule (`rsa_plugins.whatif`) with the same outcome a real run with
the same seeds would have.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

from .config import RSAConfig
from .seeds import derive_seed
from .types import Candidate


def majority_posterior(majority: int, others: int) -> float:
    """P(the majority answer is the one most samples would give), given its count and the
    count of every other sample: with a uniform prior on the majority answer's share p,
    P(p > 1/2 | counts) = P(Binomial(majority + others + 1, 1/2) <= majority)."""
    n = majority + others + 1
    return sum(comb(n, i) for i in range(majority + 1)) / 2 ** n


@dataclass(frozen=True)
class EarlyStop:
    """Whether a problem stops after a step: its rule held at the last `patience` steps.

    ``unanimous``: every member that did not fail has an extracted answer, all equivalent.
    ``consensus``: unanimous, or the largest answer cluster holds with posterior probability
    >= `confidence` against every other member (unanswered members count against it; the
    Adaptive-Consistency test).  Failed and unanswered members never make an agreement, so
    open-ended problems (no extracted answers) never stop early.
    """

    rule: str = "never"
    patience: int = 1
    confidence: float = 0.95

    @classmethod
    def of(cls, config: RSAConfig) -> EarlyStop:
        return cls(config.early_stop, config.early_stop_patience, config.early_stop_confidence)

    def agrees(self, metrics: dict[str, Any]) -> bool:
        """Whether one step's population agrees under the rule (from its step metrics)."""
        alive, unanswered = int(metrics["population"]), int(metrics["no_answer"])
        if alive == 0 or unanswered == alive:
            return False
        if unanswered == 0 and metrics["distinct_answers"] == 1:
            return True
        if self.rule != "consensus":
            return False
        largest = round(metrics["majority_share"] * alive)
        return majority_posterior(largest, alive - largest) >= self.confidence

    def reason(self, history: Sequence[dict[str, Any]]) -> str | None:
        """The rule's name when the problem stops after the last step of `history`, else None."""
        if self.rule == "never" or len(history) < self.patience:
            return None
        if all(self.agrees(m) for m in history[-self.patience:]):
            return self.rule
        return None


def stop_reason(early_stop: EarlyStop, history: Sequence[dict[str, Any]],
                generations: Sequence[Candidate]) -> str | None:
    """Why a problem ends after the last step of `history` (whose own generations are
    `generations`): every generation failed (``failed``), or its rule held; else None."""
    if not any(c.completion.ok for c in generations):
        return "failed"
    return early_stop.reason(history)


def island_count(config: RSAConfig, step: int) -> int:
    """How many islands the population forms when step `step` draws its subsets.

    The T steps are split evenly into log2(M) + 1 phases; the M islands of the first phase
    merge pairwise at each phase boundary (M=4, T=6: 4 islands for steps 1-2, 2 for steps
    3-4, 1 for steps 5-6)."""
    m = config.islands
    if m == 1:
        return 1
    phases = m.bit_length()
    return m >> ((step - 1) * phases // config.steps)


def draw(config: RSAConfig, problem_id: str, step: int,
         population: Sequence[Candidate]) -> list[list[int]]:
    """For each of the N slots of `step`, the positions in `population` (the previous step's
    members, in slot order) of its K distinct parents, drawn uniformly at random.

    A slot draws only from the members of its own island (contiguous slots) that did not
    fail; when fewer than K of them succeeded, its subset is all of them, and when none did,
    it draws from every member that succeeded.  Draws are hashes of (seed, problem, step), so
    they do not depend on completion order, and a resumed run draws what an uninterrupted one
    would."""
    n, k = config.population, config.aggregation_size
    alive = [i for i, c in enumerate(population) if c.completion.ok]
    size = n // island_count(config, step)
    rng = random.Random(derive_seed(config.seed, problem_id, step, "subsets"))
    subsets = []
    for slot in range(n):
        island = slot // size
        pool = [i for i in alive if population[i].slot // size == island] if size < n else alive
        pool = pool or alive
        subsets.append(rng.sample(pool, min(k, len(pool))))
    return subsets
