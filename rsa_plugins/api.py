"""`run` / `arun`: RSA on one problem or many, over any engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, overload

from ._background import run_sync
from .config import RSAConfig
from .engines.base import Engine
from .loop import RSALoop
from .observers import OnStep
from .types import Problem, RSAResult, Scorer
from .validate import check_known

ProblemLike = str | Problem | Mapping[str, Any]


def as_problem(item: ProblemLike, scorer: Scorer | None = None) -> Problem:
    """A `Problem` from a string, a mapping with a ``prompt`` key, or a `Problem`."""
    if isinstance(item, Problem):
        p = item
    elif isinstance(item, str):
        p = Problem(prompt=item)
    elif isinstance(item, Mapping):
        if "prompt" not in item:
            raise ValueError("a problem given as a mapping needs a 'prompt' key")
        p = Problem(**dict(item))
    else:
        raise TypeError(f"a problem must be a str, a mapping or a Problem, not {type(item).__name__}")
    if scorer is not None and p.scorer is None:
        p.scorer = scorer
    return p


def make_engine(model: str | Engine | Any, api_base: str | None = None, **options: Any) -> Engine:
    """An engine for a model string: ``embedded`` runs the embedded SmolLM2-135M-Instruct on
    vLLM in this process with the CPU settings of ``rsa``, ``vllm:<path or id>`` runs vLLM in
    this process (one batch per step), ``vllm-async:<path or id>`` runs vLLM's async engine in
    this process (barrier-free), anything else goes through LiteLLM (a `litellm.Router` is
    accepted too).  ``verbose=True`` leaves vLLM's and LiteLLM's logs on."""
    if isinstance(model, Engine):
        return model
    from .embedded import NAME, embedded_engine, quiet

    verbose = bool(options.pop("verbose", False))
    if model == NAME:
        return embedded_engine(verbose, **options)
    quiet(verbose)
    if model is None:
        raise ValueError("model is required: 'embedded' (the embedded SmolLM2-135M, CPU is "
                         "fine), a LiteLLM model string such as 'openai/gpt-4o-mini' or "
                         "'hosted_vllm/NAME' (with api_base), or 'vllm:<path>' / "
                         "'vllm-async:<path>' for in-process vLLM")
    if type(model).__name__ == "Router":
        from .engines.litellm import LiteLLMEngine

        group = options.pop("model_group", None) or model.model_list[0]["model_name"]
        return LiteLLMEngine(group, router=model, **options)
    if isinstance(model, str) and model.startswith("vllm:"):
        from .engines.vllm import VLLMEngine

        return VLLMEngine(model.removeprefix("vllm:"), **options)
    if isinstance(model, str) and model.startswith("vllm-async:"):
        from .engines.vllm import AsyncVLLMEngine

        return AsyncVLLMEngine(model.removeprefix("vllm-async:"), **options)
    from .engines.litellm import LiteLLMEngine

    return LiteLLMEngine(model, api_base=api_base, **options)


_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RSAConfig))


def engine_option_names(model: Any) -> set[str]:
    """The engine options `run` accepts for `model` (an engine object takes none): LiteLLM's
    (its engine's, its `completion` arguments, the pass-through request fields), or vLLM's
    (its engine's and ``vllm.EngineArgs``'s)."""
    if isinstance(model, Engine):
        return set()
    from .embedded import NAME

    if isinstance(model, str) and (model == NAME or model.startswith(("vllm:", "vllm-async:"))):
        from .engines.vllm import AsyncVLLMEngine, VLLMEngine
        from .engines.vllm_base import option_names as vllm_options

        return vllm_options(VLLMEngine, AsyncVLLMEngine) | {"verbose"}
    from .engines.litellm import option_names

    return option_names() | {"verbose", "model_group"}


@overload
async def arun(problem_or_problems: ProblemLike, model: Any = ..., api_base: str | None = ...,
               population: int = ..., aggregation_size: int = ..., steps: int = ...,
               selection: str = ..., seed: int = ..., **options: Any) -> RSAResult: ...
@overload
async def arun(problem_or_problems: Sequence[ProblemLike], model: Any = ...,
               api_base: str | None = ..., population: int = ..., aggregation_size: int = ...,
               steps: int = ..., selection: str = ..., seed: int = ...,
               **options: Any) -> list[RSAResult]: ...


async def arun(problem_or_problems: ProblemLike | Sequence[ProblemLike], model: Any = None,
               api_base: str | None = None, population: int = RSAConfig.population,
               aggregation_size: int = RSAConfig.aggregation_size, steps: int = RSAConfig.steps,
               selection: str = RSAConfig.selection, seed: int = RSAConfig.seed, *,
               trace: str | Path | None = None, resume: bool = True,
               progress: bool | None = None, on_step: OnStep | None = None,
               scorer: Scorer | None = None, **options: Any) -> RSAResult | list[RSAResult]:
    """Run RSA; one result for a single problem, a list for a list.

    `options` holds `RSAConfig` fields (temperature, max_tokens, view, kind, lockstep,
    concurrency, ...) and engine options (api_key, timeout, max_retries, use_n, LiteLLM's
    request arguments, ...; see `engine_option_names`); any other name is a `ConfigError`
    naming the closest valid one.
    """
    config, engine_options = RSAConfig.from_options(
        population=population, aggregation_size=aggregation_size, steps=steps,
        selection=selection, seed=seed, **options)
    check_known("option", engine_options, [*_CONFIG_FIELDS, *engine_option_names(model)])
    single = isinstance(problem_or_problems, (str, Problem, Mapping))
    items = [problem_or_problems] if single else list(problem_or_problems)  # type: ignore[list-item]
    problems = [as_problem(x, scorer) for x in items]
    if not isinstance(model, Engine):
        engine_options.setdefault("concurrency", config.concurrency)
    engine = make_engine(model, api_base, **engine_options)
    try:
        results = await RSALoop(engine, config, trace=trace, resume=resume, progress=progress,
                            on_step=on_step).run(problems)
    finally:
        if engine is not model:  # we made it, we close it
            await engine.aclose()
    return results[0] if single else results


def run(problem_or_problems: ProblemLike | Sequence[ProblemLike], model: Any = None,
        api_base: str | None = None, population: int = RSAConfig.population,
        aggregation_size: int = RSAConfig.aggregation_size, steps: int = RSAConfig.steps,
        selection: str = RSAConfig.selection, seed: int = RSAConfig.seed,
        **options: Any) -> RSAResult | list[RSAResult]:
    """Synchronous `arun` (runs on a background event loop, so it also works in notebooks)."""
    return run_sync(arun(problem_or_problems, model, api_base, population, aggregation_size,
                         steps, selection, seed, **options))
