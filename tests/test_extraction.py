"""Answer extraction reads what models write (issue 22, item 2), from the one table of kinds.

A table of real-looking endings of completions -- inline ``ANSWER:``, Minerva's "The final answer
is $42$. I hope it is correct.", BBH's "So the answer is (B).", bold and LaTeX-wrapped answers --
with the answer each kind must read from it, or None where the completion commits to none.  Then
what the run reports: a population that writes its answers inline is counted right, votes over
its answers, and a population without answers says so (``no_answer``) instead of voting over
whole texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import rsa_plugins
from rsa_plugins import kinds
from rsa_plugins.answers import extract
from rsa_plugins.engines.base import Engine
from rsa_plugins.types import Completion, Request

#: (kind, completion ending, answer it commits to)
ENDINGS: list[tuple[str, str, str | None]] = [
    # general: explicit markers anywhere on a line, the last one winning
    ("general", "Adding 40 and 2 gives 42, so ANSWER: 42", "42"),
    ("general", "We get 40 + 2 = 42.\nANSWER: 42", "42"),
    ("general", "First guess ANSWER: 41. Checking again... ANSWER: 42", "42"),
    ("general", "So the total is 42.\n\n**Final answer:** 42", "42"),
    ("general", "Final Answer: The final answer is $42$. I hope it is correct.", "42"),
    ("general", "**Answer:** **Paris**", "Paris"),
    ("general", "Therefore, the answer is (B).", "(B)"),
    ("general", "Let's think step by step. 7 + 5 = 12. So the answer is 12.", "12"),
    ("general", "The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
    ("general", "Thus the result is $\\boxed{17}$.", "17"),
    ("general", "So there are 18 cookies left.\n#### 18", "18"),
    ("general", "The capital of France is a large city.\nParis", "Paris"),
    ("general", "Final answer: \\(x = 3\\)", "x = 3"),
    ("general", "The answer is `True`.", "True"),
    ("general", "I think about the question carefully, weighing every option and every date "
                "I remember from history lessons long ago.", None),
    ("general", "Dear team,\nthank you for the clear plan. I have read it and I agree with the "
                "schedule, and I will send my part by Friday afternoon at the latest.", None),
    # math: \boxed first, then marked answers, then the last number
    ("math", "Multiplying, 6 * 7 = 42, so ANSWER: 42", "42"),
    ("math", "The final answer is $-\\frac{1}{2}$. I hope it is correct.", "-\\frac{1}{2}"),
    ("math", "We find $x = 5$, hence $\\boxed{5}$.", "5"),
    ("math", "Final Answer: The final answer is $\\boxed{2\\sqrt{3}}$. I hope it is correct.",
     "2\\sqrt{3}"),
    ("math", "The answer is **1,024**.", "1,024"),
    ("math", "Summing the terms yields 2 + 4 + 6 = 12", "12"),
    ("math", "Answer: $\\dfrac{7}{8}$", "\\dfrac{7}{8}"),
    ("math", "There is no number here at all.", None),
    # multiple choice: letters, however they are dressed
    ("multiple_choice", "Comparing the options, ANSWER: C", "C"),
    ("multiple_choice", "Let's think step by step... So the answer is (B).", "B"),
    ("multiple_choice", "The answer is (J).", "J"),
    ("multiple_choice", "The best answer is D.", "D"),
    ("multiple_choice", "**Answer: (A)**", "A"),
    ("multiple_choice", "Answer: **C**", "C"),
    ("multiple_choice", "The correct option is therefore $\\boxed{\\text{B}}$.", "B"),
    ("multiple_choice", "After eliminating the others we are left with\n(D)", "D"),
    ("multiple_choice", "None of these seem right to me, honestly.", None),
    # code and reasoning-gym
    ("code", "Here it is:\n```python\ndef f(x):\n    return x + 1\n```\nDone.",
     "def f(x):\n    return x + 1"),
    ("code", "    return sorted(set(xs))\n", "return sorted(set(xs))"),
    ("reasoning_gym", "I count carefully.\n<answer>14</answer>", "14"),
    ("reasoning_gym", "first <answer>3</answer> then <answer>4</answer>", "4"),
    ("reasoning_gym", "The answer is 14.", None),
]


@pytest.mark.parametrize("kind,text,expected", ENDINGS,
                         ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(ENDINGS)])
def test_extraction_reads_what_models_write(kind, text, expected):
    assert extract(text, kind) == expected


def test_the_table_has_enough_real_endings_of_every_kind():
    assert len(ENDINGS) >= 30
    assert {k for k, _, _ in ENDINGS} == set(kinds.NAMES)


def test_one_table_of_kinds_feeds_prompts_config_and_adapters():
    from rsa_plugins import prompts
    from rsa_plugins.adapters.inspect import problem as inspect_problem
    from rsa_plugins.config import KINDS

    assert KINDS == ("auto", *kinds.NAMES)
    for name, kind in kinds.KINDS.items():
        assert prompts.ANSWER_FORMATS[name] == kind.clause
        assert prompts.NOUNS[name] == kind.noun
        assert prompts.instruction(name) == kind.instruction
        assert kind.clause in kind.instruction
        assert set(inspect_problem.PRESETS) == {"auto", "none", *kinds.NAMES}
    assert not hasattr(inspect_problem, "MARKERS")  # the markers live in the table only
    with pytest.raises(ValueError, match="kind must be one of"):
        kinds.get("maths")


class Fixed(Engine):
    """Every generation is one of `replies`, in turn."""

    name = "fixed"

    def __init__(self, replies: Sequence[str]) -> None:
        self.replies, self.calls = list(replies), 0

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        out = []
        for req in requests:
            batch = []
            for _ in range(req.n):
                batch.append(Completion(text=self.replies[self.calls % len(self.replies)],
                                        prompt_tokens=5, completion_tokens=5,
                                        finish_reason="stop"))
                self.calls += 1
            out.append(batch)
        return out


AIME_PROMPT = ("Find the sum of 40 and 2.\n\nThe last line of your response should be of the "
               'form "ANSWER: $ANSWER" (without quotes) where $ANSWER is the answer.')


def test_inline_answers_count_in_results_votes_and_metrics():
    replies = ["Adding 40 and 2 gives 42, so ANSWER: 42",
               "40 plus 2 makes 42, therefore ANSWER: 42",
               "I believe it is 41, so ANSWER: 41"]
    result = rsa_plugins.run({"prompt": AIME_PROMPT, "target": "42"}, Fixed(replies),
                             population=3, aggregation_size=2, steps=1)
    assert result.answer == "42"
    assert result.votes == {"42": 2, "41": 1}
    assert result.steps[-1]["mean_accuracy"] == pytest.approx(2 / 3)
    assert result.steps[-1]["no_answer"] == 0
    assert result.steps[-1]["distinct_answers"] == 2


def test_a_population_without_answers_says_so_instead_of_voting_over_texts():
    replies = [f"Dear team, I read the plan number {i} and I agree with all of the schedule "
               "that you proposed for the launch next week." for i in range(4)]
    result = rsa_plugins.run("Write a note to the team.", Fixed(replies), population=4,
                             aggregation_size=2, steps=1)
    assert result.answer is None
    assert result.votes == {}
    assert result.steps[-1]["no_answer"] == 4
    assert result.steps[-1]["distinct_answers"] == 0
    assert result.chosen is not None  # still a reply: a uniform pick


def test_candidate_views_keep_leading_indentation():
    """A humaneval completion is the body of a function: its first line's indentation is code
    (issue 22, item 1).  Only trailing whitespace and leading blank lines go."""
    from rsa_plugins.config import RSAConfig
    from rsa_plugins.prompts import candidate_view
    from rsa_plugins.types import Candidate, Problem

    problem = Problem('def f():\n    """Return 7."""\n', kind="code")
    cand = Candidate(1, 0, [], 0, Completion(text="\n  \n    x = 7\n    return x\n\n  "))
    for view in ("full", "tail"):
        assert candidate_view(cand, RSAConfig(view=view), problem, "code") == \
            "    x = 7\n    return x"
