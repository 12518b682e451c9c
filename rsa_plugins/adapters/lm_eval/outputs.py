"""What the lm-eval models return: the chosen text, carrying the final population."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...types import RSAResult


class RSAOutput(str):
    """The chosen candidate's text, carrying what RSA knows about the request.

    Attributes: ``population`` (final candidate texts, failed ones as ""), ``answers`` (their
    extracted answers), ``chosen`` (index of the returned one, None if all failed),
    ``answer``, ``votes``, ``steps`` (per-step metrics), ``usage``, ``failed`` and ``stopped``
    (``{"step": t, "reason": ...}`` when the problem ended before the last step, else None).
    lm-eval's sample log writes the plain text; task code reads the attributes
    (`rsa_plugins.adapters.lm_eval.metrics`).
    """

    population: list[str]
    answers: list[Any]
    chosen: int | None
    answer: Any
    votes: dict[str, int]
    steps: list[dict[str, Any]]
    usage: dict[str, int]
    failed: bool
    stopped: dict[str, Any] | None

    def __new__(cls, text: str, **attributes: Any) -> RSAOutput:
        obj = super().__new__(cls, text)
        obj.__dict__.update(attributes)
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # lm-eval's --use_cache pickles outputs
        return (_rebuild, (str(self), dict(self.__dict__)))

    @classmethod
    def from_result(cls, result: RSAResult) -> RSAOutput:
        return cls(result.text if result.chosen is not None else "",
                   population=[c.completion.text if c.completion.ok else ""
                               for c in result.population],
                   answers=[c.answer for c in result.population], chosen=result.chosen,
                   answer=result.answer, votes=dict(result.votes), steps=list(result.steps),
                   usage=dataclasses.asdict(result.usage), failed=result.failed,
                   stopped=dataclasses.asdict(result.stopped) if result.stopped else None)


def _rebuild(text: str, attributes: dict[str, Any]) -> RSAOutput:
    return RSAOutput(text, **attributes)
