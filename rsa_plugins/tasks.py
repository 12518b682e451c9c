"""Offline task sets: reasoning-gym generates verifiable problems without any download."""

from __future__ import annotations

from typing import Any

from .prompts import ANSWER_FORMATS
from .types import Problem

# No example value here: small models copy it as their answer.
RG_INSTRUCTION = (
    "Think step by step. Then write only the final answer between <answer> and </answer> tags."
)
#: instruction of ``answer_format="number"``: the wording SmolLM2-135M follows best (a CPU probe
#: of 4 wordings on 5 numeric datasets); it almost never writes <answer> tags whatever it is told
NUMBER_INSTRUCTION = "Give the final answer as a number."
NUMBER_HINT = "the final answer as a number"
#: answer formats of `reasoning_gym_problems`
FORMATS = ("tags", "number")


def reasoning_gym_problems(dataset: str, limit: int = 20, seed: int = 0,
                           answer_format: str = "tags", **dataset_config: Any) -> list[Problem]:
    """`limit` problems of a reasoning-gym dataset, each scored by reasoning-gym's own scorer.

    ``answer_format="tags"`` (default): reasoning-gym's own format; problems carry kind
    ``reasoning_gym`` and only an ``<answer>`` tag counts as an answer.
    ``answer_format="number"``, for datasets whose answers are numbers: the instruction asks for
    the answer as a number and problems carry kind ``math``, whose extraction takes a
    ``\\boxed{}``, an ``Answer:`` line, else the last number in the text (lenient: made for small
    models that ignore answer formats); aggregation prompts ask for the same format.
    `target` holds the gold answer (for display; scoring uses the dataset's `score_answer`).
    """
    try:
        import reasoning_gym
    except ImportError:
        raise ImportError("reasoning-gym tasks need `pip install 'rsa-plugins[reasoning-gym]'`") from None
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if answer_format not in FORMATS:
        raise ValueError(f"answer_format must be one of {', '.join(FORMATS)}; "
                         f"got {answer_format!r}")
    names = sorted(reasoning_gym.factory.DATASETS)
    if dataset not in names:
        close = [n for n in names if dataset.split("_")[0] in n][:8]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown reasoning-gym dataset {dataset!r}{hint}")
    data = reasoning_gym.create_dataset(dataset, size=limit, seed=seed, **dataset_config)
    number = answer_format == "number"
    instruction = NUMBER_INSTRUCTION if number else RG_INSTRUCTION
    problems = []
    for i in range(limit):
        entry = data[i]

        def score(answer: Any, text: str, problem: Problem, entry: dict = entry) -> float:
            return float(data.score_answer(None if answer is None else str(answer), entry))

        # enough to rebuild the entry elsewhere (e.g. a reward function scoring training rows)
        metadata: dict[str, Any] = {"dataset": dataset, "index": i, "seed": seed, "size": limit}
        problems.append(Problem(
            prompt=f"{entry['question']}\n\n{instruction}", id=f"{dataset}-{seed}-{i}",
            target=entry["answer"], kind="math" if number else "reasoning_gym", scorer=score,
            answer_format=NUMBER_HINT if number else ANSWER_FORMATS["reasoning_gym"],
            metadata=metadata,
        ))
    return problems


def reasoning_gym_datasets() -> list[str]:
    """Names of every dataset reasoning-gym can generate."""
    import reasoning_gym

    return sorted(reasoning_gym.factory.DATASETS)
