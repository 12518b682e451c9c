"""Offline task sets: reasoning-gym generates verifiable problems without any download."""

from __future__ import annotations

from typing import Any

from .types import Problem

# No example value here: small models copy it as their answer.
RG_INSTRUCTION = (
    "Think step by step. Then write only the final answer between <answer> and </answer> tags."
)


def reasoning_gym_problems(dataset: str, limit: int = 20, seed: int = 0,
                           **dataset_config: Any) -> list[Problem]:
    """`limit` problems of a reasoning-gym dataset, each scored by reasoning-gym's own scorer.

    Problems carry kind ``reasoning_gym`` (answers in ``<answer>`` tags) and the gold answer as
    `target` (for display; scoring uses the dataset's `score_answer`).
    """
    try:
        import reasoning_gym
    except ImportError:
        raise ImportError("reasoning-gym tasks need `pip install 'rsa-plugins[reasoning-gym]'`") from None
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    names = sorted(reasoning_gym.factory.DATASETS)
    if dataset not in names:
        close = [n for n in names if dataset.split("_")[0] in n][:8]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown reasoning-gym dataset {dataset!r}{hint}")
    data = reasoning_gym.create_dataset(dataset, size=limit, seed=seed, **dataset_config)
    problems = []
    for i in range(limit):
        entry = data[i]

        def score(answer: Any, text: str, problem: Problem, entry: dict = entry) -> float:
            return float(data.score_answer(None if answer is None else str(answer), entry))

        problems.append(Problem(
            prompt=f"{entry['question']}\n\n{RG_INSTRUCTION}", id=f"{dataset}-{seed}-{i}",
            target=entry["answer"], kind="reasoning_gym", scorer=score,
            metadata={"dataset": dataset, "index": i, "seed": seed},
        ))
    return problems


def reasoning_gym_datasets() -> list[str]:
    """Names of every dataset reasoning-gym can generate."""
    import reasoning_gym

    return sorted(reasoning_gym.factory.DATASETS)
