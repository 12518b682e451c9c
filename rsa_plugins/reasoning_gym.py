"""reasoning-gym problems: verifiable tasks generated offline, scored by reasoning-gym itself.

``rsa eval --task rg:DATASET`` and the integrations build their problems here; :data:`DEMO` is
the task of ``rsa eval`` without ``--task``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .kinds import KINDS
from .types import Problem
from .validate import did_you_mean

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


@dataclass(frozen=True)
class TaskSpec:
    """A reasoning-gym dataset with its generator config, answer format and default size."""

    dataset: str
    config: dict[str, Any] = field(default_factory=dict)
    answer_format: str = "tags"
    description: str = ""
    limit: int = 20

    @classmethod
    def parse(cls, task: str) -> TaskSpec:
        """The task named ``rg:<dataset>`` (ValueError otherwise)."""
        prefix, _, name = task.partition(":")
        if prefix != "rg" or not name:
            raise ValueError(f"unknown task {task!r}: tasks are rg:<reasoning-gym dataset>, "
                             "e.g. rg:basic_arithmetic (`rsa eval --list-tasks` lists them)")
        return cls(name)

    def with_format(self, answer_format: str) -> TaskSpec:
        return replace(self, answer_format=answer_format)

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        return reasoning_gym_problems(self.dataset, self.limit if limit is None else limit, seed,
                                      self.answer_format, **self.config)


#: ``rsa eval`` without ``--task``: products of two 1-digit numbers, answered as a number; easy
#: enough that the embedded 135M model is right about 4 times in 10 (docs/results.md)
DEMO = TaskSpec("products", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
                "number", "products of two 1-digit numbers, answered as a number", limit=8)


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
        raise ValueError(f"unknown reasoning-gym dataset {dataset!r}"
                         f"{did_you_mean(dataset, names, n=3)}")
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
            answer_format=NUMBER_HINT if number else KINDS["reasoning_gym"].clause,
            metadata=metadata,
        ))
    return problems


def reasoning_gym_datasets() -> list[str]:
    """Names of every dataset reasoning-gym can generate."""
    import reasoning_gym

    return sorted(reasoning_gym.factory.DATASETS)
