"""Aggregation prompts, and the views of a candidate that go into them.

The wording paraphrases the paper's aggregation prompt: one user turn that says several
candidate responses follow (some possibly wrong), asks to merge their useful ideas, pick the
right path where they disagree and try a new approach if all are wrong; then the problem, the
candidates in numbered blocks, and a closing request for one improved response.  K=1 has its own
"refine this candidate" wording.

The closing request keeps the task's own answer format: it asks for the response in the form the
problem asks for (its instructions, its few-shot examples, its prefill), and adds an
answer-format clause of its own only when RSA itself chose the format (`Problem.answer_format`).
So a task's filters and scorers read aggregated outputs exactly as they read plain samples, and
an open-ended task gets no answer line at all.
"""

from __future__ import annotations

import re

from .answers import extract
from .config import RSAConfig
from .kinds import KINDS
from .types import Candidate, Problem, Tokenizer

#: the clause RSA adds to prompts, per answer kind, where it chooses the format itself (from
#: `rsa_plugins.kinds`, the one table of kinds)
ANSWER_FORMATS: dict[str, str] = {name: k.clause for name, k in KINDS.items()}
#: what the task is called in the prompt, per answer kind
NOUNS: dict[str, str] = {name: k.noun for name, k in KINDS.items()}

OMITTED = "[... earlier part omitted ...]\n"
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\r?\n)+")
#: what an aggregation of several candidates asks (the core's prompt, DSPy's instructions)
COMBINE = ("Some of them may be wrong or incomplete. Combine the useful ideas of the candidates "
           "into one better response: where they disagree, work out which is right; if every "
           "candidate is wrong, try a different approach of your own.")
#: what a refinement of one candidate (K = 1) asks
REFINE = ("The candidate may be incomplete or contain mistakes. Refine it into a better, fully "
          "correct response: check each step, fix what is wrong, and if its approach is wrong "
          "altogether, solve the problem a different way.")


def instruction(kind: str) -> str:
    """The sentence RSA appends to a prompt when it chooses the answer format of `kind`."""
    return KINDS[kind].instruction


def tail(text: str, n_tokens: int, tokenizer: Tokenizer | None = None) -> tuple[str, bool]:
    """The last `n_tokens` tokens of `text` (about 4 characters a token without a tokenizer)."""
    if tokenizer is not None:
        ids = tokenizer.encode(text)
        if len(ids) <= n_tokens:
            return text, False
        return OMITTED + tokenizer.decode(ids[-n_tokens:]), True
    limit = 4 * n_tokens
    if len(text) <= limit:
        return text, False
    return OMITTED + text[-limit:], True


def shown(text: str) -> str:
    """`text` without trailing whitespace and leading blank lines; the first line keeps its
    indentation (a code completion's ``    return x`` is still inside its function)."""
    return _LEADING_BLANK_LINES.sub("", text.rstrip())


def candidate_view(cand: Candidate, config: RSAConfig, problem: Problem, kind: str,
                   tokenizer: Tokenizer | None = None) -> str:
    """The text of a candidate as it appears in an aggregation prompt.

    A problem's prefill is put back in front of the generated text, so the candidate reads
    as the whole response ("The best answer is" + " C.").
    """
    text = cand.completion.text
    if problem.prefill:
        text = f"{problem.prefill}{text}"
    text = shown(text)
    if config.view == "answer":
        answer = cand.answer if cand.answer is not None else extract(text, kind)
        return f"Final answer: {answer}" if answer is not None else text[-400:]
    if config.include_reasoning and cand.completion.reasoning:
        text = f"<think>\n{shown(cand.completion.reasoning)}\n</think>\n{text}"
    if config.view == "tail":
        text, _ = tail(text, config.tail_tokens, tokenizer)
    return text


def aggregation_prompt(problem: Problem, views: list[str], config: RSAConfig, kind: str) -> str:
    """The user turn that asks the model to aggregate `views` into one response."""
    blocks = "\n\n".join(f"---- Solution {i} ----\n{v}" for i, v in enumerate(views, 1))
    fmt = problem.answer_format
    if config.template is not None:
        return config.template.format(problem=problem.prompt, candidates=blocks,
                                      format_hint=fmt or "the form the problem asks for",
                                      k=len(views))
    noun = NOUNS.get(kind, "problem")
    closing = (f", ending with {fmt}." if fmt else
               " in exactly the form the problem asks for (its instructions and examples "
               "set the format).")
    if len(views) == 1:
        return (
            f"You are given a {noun} and one candidate response to it. {REFINE}\n\n"
            f"Problem:\n{problem.prompt}\n\n"
            f"---- Candidate ----\n{views[0]}\n\n"
            f"Now write one improved response to the problem{closing}"
        )
    return (
        f"You are given a {noun} and {len(views)} candidate responses to it. {COMBINE}\n\n"
        f"Problem:\n{problem.prompt}\n\n"
        "Candidate responses (they may contain mistakes):\n\n"
        f"{blocks}\n\n"
        f"Now write one improved response to the problem{closing}"
    )


def aggregation_stop(stop: tuple[str, ...] | list[str], problem: Problem) -> list[str]:
    """The stop strings of an aggregation request: the task's, less two kinds that cut
    aggregated replies before their answer (measured on SmolLM2 with lm-eval's BBH, minerva,
    nq_open and triviaqa files: tests/benchmarks/test_stop_strings_real.py).

    - Those that open the problem's own text (BBH's ``Q``, Minerva's ``Problem:``,
      ``Question:``): they keep a plain reply from starting a new few-shot example, but the
      aggregation turn quotes the problem, and a reply that restates it stops at once.
    - Blank lines (a stop string of whitespace with ``\\n\\n`` in it): an aggregated reply
      often opens with a line that introduces its answer ("Here is the improved solution:")
      and a blank line.

    A single line break and punctuation stay (short-answer tasks end their answer there), as
    do the task's filters and ``max_gen_toks``: the first answer of a longer reply is the one
    a task's filter takes.
    """
    return [s for s in stop if not (s.strip() and problem.prompt.startswith(s))
            and not (not s.strip() and "\n\n" in s)]
