"""Per-step statistics of a population (and across problems)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .equivalence import cluster
from .types import Candidate

ACCURACY_KEYS = ("mean_accuracy", "pass_at_n", "majority_accuracy")


def entropy(counts: Sequence[int]) -> float:
    """Shannon entropy (nats) of a vote distribution."""
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c) if total else 0.0


def population_accuracy(scores: Sequence[float], size: int,
                        majority: int | None) -> dict[str, float]:
    """The paper's quantities for one population: ``mean_accuracy`` (of `size` members; those
    missing from `scores`, failed ones, count as wrong), ``pass_at_n`` (any member correct) and
    ``majority_accuracy`` (whether member `majority` of `scores`, the vote's pick, is correct)."""
    return {
        "mean_accuracy": sum(scores) / size if size else 0.0,
        "pass_at_n": float(any(s >= 1.0 for s in scores)),
        "majority_accuracy": float(majority is not None and scores[majority] >= 1.0),
    }


def step_metrics(step: int, cands: Sequence[Candidate], kind: str, requested: int,
                 fitted: int = 0, aggregation_size: int | None = None) -> dict[str, Any]:
    """Statistics of one problem's population at one step.

    `cands` holds every generation of the step, failed ones included; `requested` is N.
    ``smaller_subsets``: aggregations that saw fewer than `aggregation_size` (K) candidates,
    because fewer members of the previous population succeeded.  Accuracy keys appear only
    when candidates were scored.
    """
    alive = [c for c in cands if c.completion.ok]
    answers = [c.answer for c in alive]
    groups = cluster(answers, kind)
    sizes = [len(g) for g in groups]
    out: dict[str, Any] = {
        "step": step,
        "population": len(alive),
        "requested": requested,
        "failed": sum(1 for c in cands if not c.completion.ok) + max(0, requested - len(cands)),
        "truncated": sum(1 for c in alive if c.completion.truncated),
        "no_answer": sum(1 for a in answers if a is None),
        "distinct_answers": len(groups),
        "answer_entropy": round(entropy(sizes), 6),
        "majority_share": (max(sizes) / len(alive)) if sizes else 0.0,
        "prompt_tokens": sum(c.completion.prompt_tokens for c in cands),
        "completion_tokens": sum(c.completion.completion_tokens for c in cands),
        "retries": sum(c.completion.retries for c in cands),
        "fitted_prompts": fitted,
        "smaller_subsets": sum(1 for c in cands if step > 1 and aggregation_size is not None
                               and len(c.parents) < aggregation_size),
    }
    scores = [c.score for c in alive]
    if alive and all(s is not None for s in scores):
        best = max(groups, key=len)[0] if groups else None
        out.update(population_accuracy(scores, requested, best))  # type: ignore[arg-type]
    elif not alive and cands and cands[0].score is not None:
        out.update(population_accuracy([], requested, None))
    return out


def summarize(per_problem: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Average each step's metrics over problems (accuracies over the problems that have them)."""
    depth = max((len(s) for s in per_problem), default=0)
    table = []
    for t in range(depth):
        rows = [s[t] for s in per_problem if len(s) > t]
        agg: dict[str, Any] = {"step": t + 1, "problems": len(rows),
                               "stopped": sum(1 for r in rows if r.get("stop"))}
        for key in ("population", "failed", "truncated", "no_answer", "prompt_tokens",
                    "completion_tokens", "retries", "fitted_prompts", "smaller_subsets"):
            agg[key] = sum(r.get(key, 0) for r in rows)
        for key in ("distinct_answers", "answer_entropy", "majority_share", *ACCURACY_KEYS):
            vals = [r[key] for r in rows if key in r]
            if vals:
                agg[key] = sum(vals) / len(vals)
        table.append(agg)
    return table
