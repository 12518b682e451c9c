"""RSAConfig: every knob of one RSA run, validated at construction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .kinds import NAMES as _KIND_NAMES
from .validate import ConfigError, check_choice, check_float, check_int, refuse_unknown

__all__ = ["RSAConfig", "ConfigError", "SELECTIONS", "VIEWS", "ORDERS", "KINDS", "EARLY_STOPS"]

SELECTIONS = ("majority", "random")
VIEWS = ("full", "answer", "tail")
ORDERS = ("drawn", "index")
#: per-problem stopping rules between steps ("never": the paper's full schedule)
EARLY_STOPS = ("never", "unanimous", "consensus")
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

    Spending less (all off by default, which is the paper): early_stop ends a problem after the
    first step at which its extracted answers agree, for early_stop_patience consecutive steps
    ("unanimous": one answer; "consensus": the majority answer holds with posterior probability
    >= early_stop_confidence).  budget_generations / budget_tokens / budget_usd cap the whole
    run; when they cannot pay for every step, steps go to the problems that agree least.
    islands (M) splits the population into M islands that draw subsets only from themselves and
    merge pairwise until one remains (see docs/spending-less.md).
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
    early_stop: str = "never"
    early_stop_patience: int = 1
    early_stop_confidence: float = 0.95
    budget_generations: int | None = None
    budget_tokens: int | None = None
    budget_usd: float | None = None
    islands: int = 1

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
        check_choice("early_stop", self.early_stop, EARLY_STOPS)
        set_("early_stop_patience", check_int("early_stop_patience", self.early_stop_patience, 1))
        set_("early_stop_confidence", check_float("early_stop_confidence",
                                                  self.early_stop_confidence, 0.5, 1.0))
        for name in ("budget_generations", "budget_tokens"):
            if getattr(self, name) is not None:
                set_(name, check_int(name, getattr(self, name), 1))
        if self.budget_usd is not None:
            set_("budget_usd", check_float("budget_usd", self.budget_usd, 0.0, None))
        set_("islands", check_int("islands", self.islands, 1, self.population))
        self._check_islands()
        if self.template is not None:
            for slot in ("{problem}", "{candidates}"):
                if slot not in self.template:
                    raise ConfigError(f"template must contain the placeholder {slot}")

    def _check_islands(self) -> None:
        m, n = self.islands, self.population
        if m == 1:
            return
        if m & (m - 1):
            raise ConfigError(f"islands must be a power of 2 (they merge pairwise), got {m}")
        if n % m:
            raise ConfigError(f"islands must divide population ({n}) into equal islands, got {m}")
        if self.aggregation_size > n // m:
            raise ConfigError(f"aggregation_size must be at most the island size population/"
                              f"islands = {n // m}, got {self.aggregation_size}")
        phases = m.bit_length()  # log2(M) merges + the first phase
        if self.steps < phases:
            raise ConfigError(f"islands={m} needs steps >= {phases} to merge down to one island, "
                              f"got {self.steps}")

    @property
    def spends_less(self) -> bool:
        """Whether any early-stop rule or budget is on (else every problem costs N x T)."""
        return self.early_stop != "never" or self.budgeted

    @property
    def budgeted(self) -> bool:
        return any(b is not None for b in (self.budget_generations, self.budget_tokens,
                                           self.budget_usd))

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
        if self.islands != 1:  # islands change the draws
            fields["islands"] = self.islands
        if self.early_stop != "never":  # which problems a resumed run may continue
            fields["early_stop"] = [self.early_stop, self.early_stop_patience,
                                    self.early_stop_confidence]
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_options(cls, **options: Any) -> tuple[RSAConfig, dict[str, Any]]:
        """Split keyword options into RSAConfig fields and the rest."""
        names = {f.name for f in dataclasses.fields(cls)}
        mine = {k: v for k, v in options.items() if k in names}
        rest = {k: v for k, v in options.items() if k not in names}
        return cls(**mine), rest
