"""Offline multiple-choice task with a small built-in dataset, scored by ``choice()``.

``inspect eval tasks/inspect/mc_offline.py`` runs Inspect's ``multiple_choice()`` solver;
``--solver rsa`` replaces it: RSA lists the options, asks for ``ANSWER: X`` and marks the
chosen option, so ``choice()`` scores the RSA answer.
"""

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import choice
from inspect_ai.solver import multiple_choice

QUESTIONS = [
    ("What is 7 + 5?", ["10", "12", "13", "15"], "B"),
    ("Which planet is closest to the Sun?", ["Venus", "Earth", "Mercury", "Mars"], "C"),
    ("What is the capital of France?", ["Paris", "Rome", "Madrid", "Berlin"], "A"),
    ("How many legs does a spider have?", ["6", "10", "4", "8"], "D"),
    ("What is 9 x 3?", ["27", "24", "30", "21"], "A"),
    ("Which gas do plants take in for photosynthesis?",
     ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"], "C"),
    ("What is the largest ocean on Earth?", ["Atlantic", "Pacific", "Indian", "Arctic"], "B"),
    ("How many minutes are in an hour?", ["100", "30", "60", "24"], "C"),
    ("What is the freezing point of water in Celsius?", ["0", "10", "32", "-10"], "A"),
    ("Which of these is a prime number?", ["9", "15", "21", "13"], "D"),
]


@task
def mc_offline() -> Task:
    samples = [Sample(input=q, choices=c, target=t, id=f"mc{i}")
               for i, (q, c, t) in enumerate(QUESTIONS)]
    return Task(dataset=MemoryDataset(samples, name="mc_offline"),
                solver=[multiple_choice()], scorer=choice())
