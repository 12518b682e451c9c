"""RSAConfig: every knob of one RSA run, validated at construction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .kinds import NAMES as _KIND_NAMES
from .validate import ConfigError, check_choice, check_int, refuse_unknown

__all__ = ["RSAConfig", "ConfigError", "SELECTIONS", "VIEWS", "ORDERS", "KINDS"]

SELECTIONS = ("majority", "random")
VIEWS = ("full", "answer", "tail")
ORDERS = ("drawn", "index")
#: answer kinds: how answers are extracted and compared ("auto": detected from the prompt)
KINDS = ("auto", *_KIND_NAMES)


@refuse_unknown
@dataclass(frozen=True)
class RSAConfig:
    """Parameters of Recursive Self-Aggregation (paper semantics).

    population (N): candidates per step.  aggregation_size (K): distinct candidates shown to
    each aggregation call, 1 <= K <= N (K=1 is self-refinement).  steps (T): population states
    including the first, so T=1 is plain parallel sampling and T=10 has 9 aggregation rounds.
    candidate_order: "drawn" shows a subset's candidates in the order they were drawn (the
    paper's code); "index" sorts them by population slot, so aggregation prompts that share
    their first candidates share a longer prefix for the engine's prefix cache (slots are
    exchangeable, so this is still a uniformly random order of the candidates' contents).
    stop: stop strings of every generation (an lm-eval task's ``until``).  sampling: further
    sampling fields passed to the engine as they are (e.g. ``{"top_k": 20}``).
    """

    population: int = 16
    aggregation_size: int = 4
    steps: int = 10
    selection: str = "majority"
    seed: int = 0
    temperature: float = 1.0
    top_p: float | None = None
    max_tokens: int | None = 8192
    view: str = "full"
    tail_tokens: int = 4096
    include_reasoning: bool = False
    kind: str = "auto"
    template: str | None = None
    concurrency: int = 64
    lockstep: bool = False
    candidate_order: str = "drawn"
    stop: tuple[str, ...] = ()
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("population", check_int("population", self.population, 1))
        set_("aggregation_size", check_int("aggregation_size", self.aggregation_size, 1))
        if self.aggregation_size > self.population:
            raise ConfigError(
                f"aggregation_size must be between 1 and population ({self.population}), "
                f"got {self.aggregation_size}"
            )
        set_("steps", check_int("steps", self.steps, 1))
        set_("seed", check_int("seed", self.seed, 0))
        check_choice("selection", self.selection, SELECTIONS)
        check_choice("view", self.view, VIEWS)
        check_choice("kind", self.kind, KINDS)
        check_choice("candidate_order", self.candidate_order, ORDERS)
        set_("tail_tokens", check_int("tail_tokens", self.tail_tokens, 1))
        set_("concurrency", check_int("concurrency", self.concurrency, 1))
        if self.max_tokens is not None:
            set_("max_tokens", check_int("max_tokens", self.max_tokens, 1))
        try:
            temperature = float(self.temperature)
        except (TypeError, ValueError):
            raise ConfigError(f"temperature must be a number >= 0, got {self.temperature!r}") from None
        if not temperature >= 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        set_("temperature", temperature)
        if self.top_p is not None and not 0 < float(self.top_p) <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str) or not all(isinstance(x, str) for x in self.stop):
            raise ConfigError(f"stop must be a list of strings, got {self.stop!r}")
        set_("stop", tuple(x for x in self.stop if x))
        if not isinstance(self.sampling, dict):
            raise ConfigError(f"sampling must be a dict such as {{'top_k': 20}}, got {self.sampling!r}")
        if self.template is not None:
            for slot in ("{problem}", "{candidates}"):
                if slot not in self.template:
                    raise ConfigError(f"template must contain the placeholder {slot}")

    @property
    def generations_per_problem(self) -> int:
        """N x T: the number of generations one problem costs."""
        return self.population * self.steps

    def replace(self, **changes: Any) -> RSAConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the fields that change which generations a run makes (for resume)."""
        keys = ("population", "aggregation_size", "steps", "seed", "temperature", "top_p",
                "max_tokens", "view", "tail_tokens", "include_reasoning", "kind", "template",
                "sampling")
        fields: dict[str, Any] = {k: getattr(self, k) for k in keys}
        if self.stop:  # only then, so older traces keep their fingerprint
            fields["stop"] = list(self.stop)
        if self.candidate_order != "drawn":  # only then, so older traces keep their fingerprint
            fields["candidate_order"] = self.candidate_order
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_options(cls, **options: Any) -> tuple[RSAConfig, dict[str, Any]]:
        """Split keyword options into RSAConfig fields and the rest."""
        names = {f.name for f in dataclasses.fields(cls)}
        mine = {k: v for k, v in options.items() if k in names}
        rest = {k: v for k, v in options.items() if k not in names}
        return cls(**mine), rest
