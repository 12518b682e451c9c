"""Population-aware scoring for rsa_aime25: last \\boxed{} answer, math-verify equivalence."""

from __future__ import annotations

from typing import Any

from rsa_plugins.adapters.lm_eval.metrics import population_metrics
from rsa_plugins.answers import equivalent, extract


def process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    gold = str(doc["answer"]).strip()

    def score(text: str) -> float:
        return float(equivalent(extract(text, "math"), gold, "math"))

    return {"exact_match": score(str(results[0])), **population_metrics(results[0], score, "math")}
