"""AIME 2025 (30 problems, Hugging Face ``math-ai/aime25``; needs network the first time).

``inspect eval tasks/inspect/aime2025.py --solver rsa -S population=16 -S aggregation_size=4
-S steps=10 --model vllm/<model>``.  Its own solver asks for a ``\\boxed{}`` answer; the scorer
(``rsa_plugins/answer_match``) reads the last ``\\boxed{}`` (else an ``ANSWER:`` line, else
the last number) and compares it with math-verify, so it also scores RSA's outputs.
"""

from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import Sample, hf_dataset
from inspect_ai.solver import generate, prompt_template

from rsa_plugins.adapters.inspect import answer_match

DATASET = "math-ai/aime25"
PROMPT = "{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def record_to_sample(record: dict[str, Any]) -> Sample:
    # rsa_kind: with `--solver rsa` the answer format becomes \boxed{} (see docs/inspect.md)
    return Sample(input=record["problem"], target=str(record["answer"]).strip(),
                  metadata={"rsa_kind": "math"},
                  id=str(record.get("id", "")) or None)


@task
def aime2025() -> Task:
    return Task(
        dataset=hf_dataset(DATASET, split="test", sample_fields=record_to_sample),
        solver=[prompt_template(PROMPT), generate()],
        scorer=answer_match(kind="math"),
    )
