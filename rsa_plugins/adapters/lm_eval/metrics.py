"""Population-aware metrics for lm-eval tasks (used by the tasks in ``tasks/lm_eval``).

``rsa-vllm`` / ``rsa-litellm`` return an `RSAOutput`: the chosen candidate's text carrying the
final population.  From a task's ``process_results``::

    def process_results(doc, results):
        correct = lambda text: float(answer_of(text) == doc["answer"])
        return {"exact_match": correct(results[0]), **population_metrics(results[0], correct)}

gives, next to the usual metric of the returned answer, the paper's quantities for the final
population: ``mean_accuracy`` (the expected accuracy of one random member: the paper's
Pass@1), ``majority_accuracy`` (majority vote over extracted answers) and ``pass_at_n`` (any
member correct).  Any other model returns a plain string: the population is then that one
answer, so the same task also scores baselines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...answers import extract, vote
from ...metrics import ACCURACY_KEYS, population_accuracy

METRICS = ACCURACY_KEYS


def population(response: Any) -> list[str]:
    """The final population carried by `response`, or just `response` itself."""
    pop = getattr(response, "population", None)
    return [str(t) for t in pop] if pop else [str(response)]


def population_metrics(response: Any, score: Callable[[str], float],
                       kind: str = "math") -> dict[str, float]:
    """``mean_accuracy``, ``majority_accuracy`` and ``pass_at_n`` of the final population.

    `score(text)` scores one candidate text in [0, 1]; `kind` says how answers are extracted
    for the majority vote (``math``: last ``\\boxed{}``, ``reasoning_gym``: ``<answer>``).
    Failed candidates (empty text) count as wrong.
    """
    texts = population(response)
    scores = [float(score(t)) if t else 0.0 for t in texts]
    best, _ = vote([extract(t, kind) for t in texts], kind)
    return population_accuracy(scores, len(scores), best)
