"""What one step of one problem asks the engine for: its `Job`s.

The first step samples the problem N times (one request with ``n=N`` where the engine samples
several at once); a later step asks, for each slot, one aggregation of its K parents: the
engine's own call where it builds one (`Engine.aggregation_request`), else the aggregation
prompt of the parents' views, fitted to the context (`fit`).  Each request gets the seed of its
(problem, step, slot), so generations do not depend on the order in which they are made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .config import RSAConfig
from .engines.base import Engine
from .fit import fit_aggregation, fit_first
from .prompts import aggregation_prompt, aggregation_stop, candidate_view
from .seeds import derive_seed
from .types import Candidate, Problem, Request


@dataclass
class Job:
    """One request of a step and the slots it fills (several with ``n`` > 1), or, with
    `request` None, the reason those slots get no generation.  `parents`: the slots of the
    previous population it aggregates; `cut`: its budget or candidates were cut to fit."""

    slots: list[int]
    request: Request | None
    error: str | None = None
    cut: bool = False
    parents: list[int] = field(default_factory=list)


def request_for(config: RSAConfig, problem: Problem, step: int, slot: int, n: int = 1,
                user: str | None = None) -> Request:
    """The request of one slot: the problem's chat (`user` replaces its user turn) and the
    run's sampling, seeded by (seed, problem, step, slot)."""
    return Request(messages=problem.messages(user), seed=derive_seed(config.seed, problem.id,
                                                                      step, slot),
                   n=n, temperature=config.temperature, top_p=config.top_p,
                   stop=list(config.stop), max_tokens=config.max_tokens,
                   extra=dict(config.sampling), chat=problem.chat, cache_key=problem.id)


async def sampling_jobs(engine: Engine, config: RSAConfig, problem: Problem,
                        slots: list[int]) -> list[Job]:
    """Step 1 for `slots`: N samples of the problem, one request if the engine samples `n`."""
    together = engine.supports_n and len(slots) > 1
    first = await fit_first(engine, request_for(config, problem, 1, slots[0],
                                                len(slots) if together else 1))
    if first.request is None:
        return [Job([slot], None, first.error) for slot in slots]
    if together:
        return [Job(slots, first.request)]
    jobs = [Job([slot], request_for(config, problem, 1, slot)) for slot in slots]
    for job in jobs:  # every slot sends the same prompt: one fit for all
        job.request.max_tokens = first.request.max_tokens  # type: ignore[union-attr]
    return jobs


async def aggregation_jobs(engine: Engine, config: RSAConfig, problem: Problem, kind: str,
                           step: int, population: Sequence[Candidate],
                           subsets: Sequence[Sequence[int]], slots: list[int]) -> list[Job]:
    """Step `step` for `slots`: each aggregates the members of `population` its subset names."""
    jobs = []
    stop = aggregation_stop(config.stop, problem)
    views: dict[int, str] = {}  # a member's view, made once however many subsets show it
    for slot in slots:
        drawn = subsets[slot]
        if config.candidate_order == "index":
            drawn = sorted(drawn)
        parents = [population[i] for i in drawn]
        base = request_for(config, problem, step, slot)
        base.stop = stop
        own = engine.aggregation_request(base, [c.completion for c in parents])
        if own is not None:
            fit_error, cut, request = None, False, own
        else:
            for i in drawn:
                if i not in views:
                    views[i] = candidate_view(population[i], config, problem, kind,
                                              engine.tokenizer)
            shown = [views[i] for i in drawn]
            prompt = base.with_messages(problem.messages(
                aggregation_prompt(problem, shown, config, kind)))
            fit = await fit_aggregation(engine, problem, shown, config, kind, prompt)
            fit_error, cut, request = fit.error, fit.cut, fit.request
        jobs.append(Job([slot], request, fit_error, cut, [c.slot for c in parents]))
    return jobs
