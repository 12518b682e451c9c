"""SuperGPQA for Inspect (Hugging Face ``m-a-p/SuperGPQA``; needs the hub; NOT run here).

    inspect eval integrations/reproduce/supergpqa.py --solver rsa -S population=16 ...

The paper used 1000 questions (five files of 200 in its own repository); this task takes a
seeded shuffle of the hub's train split and ``-T limit=1000`` of it, so the questions differ.
Field names (``question``, ``options``, ``answer_letter``, ``uuid``) follow the dataset card and
were not checked against the data here.  With ``--solver rsa`` the options are shown as
``A) ...`` lines, the model is asked for ``ANSWER: X``, and the chosen letter is marked so that
``choice()`` scores the RSA answer.
"""

from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import Sample, hf_dataset
from inspect_ai.scorer import choice
from inspect_ai.solver import multiple_choice

DATASET = "m-a-p/SuperGPQA"


def record_to_sample(record: dict[str, Any]) -> Sample:
    """One SuperGPQA question (up to ten options, A-J) as a multiple-choice sample."""
    return Sample(input=str(record["question"]), choices=[str(o) for o in record["options"]],
                  target=str(record["answer_letter"]).strip(),
                  id=str(record.get("uuid") or "") or None,
                  metadata={"discipline": record.get("discipline"),
                            "difficulty": record.get("difficulty")})


@task
def supergpqa(limit: int = 1000, seed: int = 0) -> Task:
    dataset = hf_dataset(DATASET, split="train", sample_fields=record_to_sample,
                         shuffle=True, seed=int(seed), limit=int(limit))
    return Task(dataset=dataset, solver=multiple_choice(), scorer=choice())
