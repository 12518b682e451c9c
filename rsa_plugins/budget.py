"""Whether the run can pay for the next request: budgets of generations, tokens and dollars.

A step is paid for before it is sent, at its worst case: every generation it asks for, every
token its prompts can take (an upper bound: a byte-level tokenizer never makes more tokens than
a text has bytes) plus every token it may generate (`max_tokens`), and the dollars those would
cost where LiteLLM's cost map prices the model.  What a step really used replaces its worst
case once it is done, so a run never spends more than its budget, in-flight requests included.
The first step of every problem is checked before the first call (a budget that cannot pay for
it is refused), so every problem ends with an answer; later steps go, when the budget cannot
pay for all of them, to the problems whose populations agree least (`rsa_plugins.schedule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import RSAConfig
from .engines.base import TEMPLATE_OVERHEAD, Engine
from .types import Completion, Problem, Request
from .validate import ConfigError

#: bytes the aggregation wording around the candidates may take (prompts.py's is ~700)
AGGREGATION_FRAME = 2048


@dataclass
class Cost:
    """Generations, tokens and dollars (None: the engine's model has no price)."""

    calls: int = 0
    tokens: int = 0
    usd: float | None = 0.0

    def __add__(self, other: Cost) -> Cost:
        usd = None if self.usd is None or other.usd is None else self.usd + other.usd
        return Cost(self.calls + other.calls, self.tokens + other.tokens, usd)

    def __sub__(self, other: Cost) -> Cost:
        usd = None if self.usd is None or other.usd is None else self.usd - other.usd
        return Cost(self.calls - other.calls, self.tokens - other.tokens, usd)

    def times(self, k: int) -> Cost:
        return Cost(self.calls * k, self.tokens * k, None if self.usd is None else self.usd * k)

    def describe(self) -> str:
        money = f", ${self.usd:,.4f}" if self.usd is not None else ""
        return f"{self.calls:,} calls, {self.tokens:,} tokens{money}"


def prompt_bound(request: Request) -> int:
    """An upper bound of the tokens `request`'s prompt takes: its bytes (a byte-level
    tokenizer makes at most one token of a byte) plus `TEMPLATE_OVERHEAD` per message."""
    return sum((len(c) if (c := m["content"]).isascii() else len(c.encode()))
               + TEMPLATE_OVERHEAD for m in request.messages)


def completion_bound(engine: Engine, config: RSAConfig, request: Request | None = None) -> int:
    """The most tokens one generation may produce (0: unbounded)."""
    return (request.max_tokens if request is not None else None) or config.max_tokens \
        or engine.max_model_len or 0


def priced(engine: Engine, prompt: int, completion: int) -> float | None:
    return engine.cost(prompt, completion)


def worst_case(engine: Engine, config: RSAConfig, requests: Sequence[Request]) -> Cost:
    """What `requests` may cost at most."""
    calls = prompt = completion = 0
    for r in requests:
        calls += r.n
        prompt += prompt_bound(r) * r.n
        completion += completion_bound(engine, config, r) * r.n
    return Cost(calls, prompt + completion, priced(engine, prompt, completion))


def spent(engine: Engine, completions: Sequence[Completion], reserved: Cost) -> Cost:
    """What generations cost: their reported usage (the reservation, where none was reported)."""
    prompt = completion = ok = 0
    for c in completions:
        prompt += c.prompt_tokens
        completion += c.completion_tokens
        ok += c.error is None
    if ok and not prompt + completion:
        return reserved  # an engine that reports no usage is charged its worst case
    return Cost(len(completions), prompt + completion, priced(engine, prompt, completion))


@dataclass
class Forecast:
    """What a run may cost at most, printed before its first call."""

    problems: int
    generations: int
    restored: int
    worst: Cost
    first_step: Cost
    limits: Cost | None

    def line(self, config: RSAConfig) -> str:
        budget = "no budget" if self.limits is None else "budget: " + ", ".join(
            f"{v:,} {name}" if name != "usd" else f"${v:,.4f}"
            for name, v in (("calls", config.budget_generations),
                            ("tokens", config.budget_tokens), ("usd", config.budget_usd))
            if v is not None)
        rule = "" if config.early_stop == "never" else f"; early stop: {config.early_stop}"
        done = f" ({self.restored:,} restored)" if self.restored else ""
        return (f"rsa: {self.problems} problem(s) x N={config.population} x T={config.steps}"
                f"{done}: at most {self.worst.describe()}; {budget}{rule}")


def forecast(engine: Engine, config: RSAConfig, problems: Sequence[Problem],
             restored: int = 0, fresh: Sequence[Problem] | None = None) -> Forecast:
    """The worst case of a whole run, and of the first steps of the `fresh` problems (default:
    all; a resumed run has some first steps already), which a budget must cover."""
    n, k, t = config.population, config.aggregation_size, config.steps
    out = completion_bound(engine, config)
    first = Cost(0, 0, 0.0)
    later = Cost(0, 0, 0.0)
    starting = {id(p) for p in (problems if fresh is None else fresh)}
    for p in problems:
        prompt = prompt_bound(Request(messages=p.messages(), seed=0))
        if id(p) in starting:
            first = first + Cost(n, n * (prompt + out), priced(engine, n * prompt, n * out))
        agg = prompt + AGGREGATION_FRAME + k * 4 * out  # candidates: at most 4 bytes a token
        later = later + Cost(n * (t - 1), n * (t - 1) * (agg + out),
                             priced(engine, n * (t - 1) * agg, n * (t - 1) * out))
    limits = None
    if config.budgeted:
        limits = Cost(config.budget_generations or 0, config.budget_tokens or 0,
                      config.budget_usd)
    return Forecast(len(problems), len(problems) * n * t, restored, first + later, first, limits)



def spent_by(engine: Engine, results: Sequence[Any]) -> Cost:
    """What finished `RSAResult`s used, in calls, tokens and (where priced) dollars."""
    prompt = sum(r.usage.prompt_tokens for r in results)
    completion = sum(r.usage.completion_tokens for r in results)
    return Cost(sum(r.usage.calls for r in results), prompt + completion,
                priced(engine, prompt, completion))


def left_for(config: RSAConfig, used: Cost, held: Cost) -> RSAConfig:
    """`config` with its budgets lowered by what earlier runs `used` and what later runs
    hold back (`held`: their first steps), for one of several runs sharing one budget."""
    def less(limit: Any, *amounts: Any) -> Any:
        return None if limit is None else type(limit)(limit - sum(a or 0 for a in amounts))

    return config.replace(budget_generations=less(config.budget_generations, used.calls,
                                                  held.calls),
                          budget_tokens=less(config.budget_tokens, used.tokens, held.tokens),
                          budget_usd=less(config.budget_usd, used.usd, held.usd))


class Budget:
    """The run's limits, what it spent and what its in-flight steps may still spend."""

    def __init__(self, config: RSAConfig, engine: Engine) -> None:
        self.calls, self.tokens, self.usd = (config.budget_generations, config.budget_tokens,
                                             config.budget_usd)
        self.spent = Cost()
        self.reserved = Cost()
        if self.tokens is not None and not completion_bound(engine, config):
            raise ConfigError("budget_tokens needs max_tokens (or an engine that knows its "
                              "context length) to bound what a generation may cost")
        if self.usd is not None and engine.cost(1000, 1000) is None:
            raise ConfigError(f"budget_usd: LiteLLM's cost map has no price for the model of "
                              f"engine {engine.describe().get('model', engine.name)!r}; use "
                              "budget_tokens or budget_generations")

    def fits(self, cost: Cost) -> bool:
        """Whether `cost` can be paid on top of what is spent and reserved."""
        total = self.spent + self.reserved + cost
        return ((self.calls is None or total.calls <= self.calls)
                and (self.tokens is None or total.tokens <= self.tokens)
                and (self.usd is None or (total.usd or 0.0) <= self.usd + 1e-12))

    def check_first_steps(self, first_step: Cost, problems: int) -> None:
        """Refuse, before any call, a budget that cannot pay for every problem's first step."""
        if not self.fits(first_step):
            raise ConfigError(
                f"the budget cannot pay for the first step of every problem (at most "
                f"{first_step.describe()} for {problems} problem(s) x N): raise "
                "budget_generations / budget_tokens / budget_usd, or lower population, "
                "max_tokens or the number of problems")

    def reserve(self, cost: Cost) -> None:
        self.reserved = self.reserved + cost

    def settle(self, reserved: Cost, used: Cost) -> None:
        """A step is done: its reservation is replaced by what it used."""
        self.reserved = self.reserved - reserved
        self.spent = self.spent + used
