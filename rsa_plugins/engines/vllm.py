"""In-process vLLM engines: `VLLMEngine` (lockstep: one `vllm.LLM.generate` per RSA step) and
`AsyncVLLMEngine` (barrier-free: vLLM's `AsyncLLM`, each problem moves on as soon as its own
N generations are done, so the GPU never idles at a step's tail).

Chat messages are rendered with the model's own chat template and tokenised here, and each
prompt is fitted to the context: the generation budget shrinks to the room left; a prompt that
leaves no room fails alone (as a `Completion` with `error`), it does not sink the batch.  With
`think_end_token` the text before the last marker is kept apart as `reasoning`, so candidate
views show it only when asked (``include_reasoning``).

    engine = VLLMEngine("HuggingFaceTB/SmolLM2-135M-Instruct", max_model_len=2048)
    engine = AsyncVLLMEngine("Qwen/Qwen3-4B-Instruct-2507", max_model_len=40960)
    results = rsa_plugins.run(problems, model=engine, population=8, steps=3)

`make_engine("vllm:<path or id>", ...)` builds a `VLLMEngine`, ``"vllm-async:<path or id>"`` an
`AsyncVLLMEngine`; options that are not the engine's own go to ``vllm.LLM`` /
``vllm.AsyncEngineArgs`` unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

from ..types import Completion, Request
from .errors import describe_error
from .placement import Placement
from .vllm_base import (
    Encode,
    Render,
    SamplingHook,
    _engine_max_len,
    _engine_options,
    _model_name,
    _VLLMPrompts,
)

class VLLMEngine(_VLLMPrompts):
    """Generations from a `vllm.LLM` running in this process, one `generate` call per step.

    `model` is a checkpoint path / hub id (an `LLM` is built with `llm_kwargs`) or an existing
    `vllm.LLM`.  `stop`: stop strings for every request (on top of each request's own).
    `render` / `encode` replace the chat rendering and tokenisation (the lm-eval adapter renders
    chats exactly as lm-eval's vLLM model does).  `sampling_hook(request)` adds SamplingParams fields per request.
    ``calls`` counts `LLM.generate` calls and ``generate_seconds`` the time inside them.
    """

    name = "vllm"
    supports_n = True
    prefers_lockstep = True

    def __init__(self, model: Any, *, tokenizer: Any = None, max_model_len: int | None = None,
                 stop: Sequence[str] | None = None, think_end_token: str | None = None,
                 chat_template: str | None = None, chat_template_kwargs: dict[str, Any] | None = None,
                 render: Render | None = None, encode: Encode | None = None,
                 sampling_hook: SamplingHook | None = None,
                 use_tqdm: bool = False, lora_request: Any = None, concurrency: int | None = None,
                 **llm_kwargs: Any) -> None:
        del concurrency  # a LiteLLM option `rsa_plugins.run` passes to every engine; vLLM batches
        if isinstance(model, str):
            from vllm import LLM

            self.llm = LLM(model=model, **_engine_options(max_model_len, llm_kwargs))
            self.model_name = model
        else:
            if llm_kwargs:
                raise TypeError(f"options {sorted(llm_kwargs)} only apply when VLLMEngine builds "
                                "the LLM itself (pass a model path, not an LLM)")
            self.llm = model
            self.model_name = _model_name(model.llm_engine if hasattr(model, "llm_engine") else model)
        self._setup(tokenizer if tokenizer is not None else self.llm.get_tokenizer(),
                    max_model_len, _engine_max_len(getattr(self.llm, "llm_engine", None)), stop,
                    think_end_token, chat_template, chat_template_kwargs, render, encode,
                    sampling_hook)
        self.use_tqdm, self.lora_request = use_tqdm, lora_request
        self.calls = 0
        self.generate_seconds = 0.0

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        from vllm import TokensPrompt

        ids = self.encode([self.render(r) for r in requests])
        out: list[list[Completion] | None] = [None] * len(requests)
        prompts, params, where = [], [], []
        for i, (req, toks) in enumerate(zip(requests, ids)):
            sp, failed = self._sampling(req, toks)
            if sp is None:
                out[i] = failed
                continue
            prompts.append(TokensPrompt(prompt_token_ids=toks))
            params.append(sp)
            where.append(i)
        self.last_batch = [(ids[i], p.max_tokens or 0, p.n) for i, p in zip(where, params)]
        if prompts:
            started = time.perf_counter()
            self.busy_clock.enter(len(prompts))
            try:
                results = self.llm.generate(prompts, sampling_params=params, use_tqdm=self.use_tqdm,
                                            lora_request=self.lora_request)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: report it per request
                results, error = None, describe_error(exc)
            finally:
                self.busy_clock.leave(len(prompts))
                self.calls += 1
                self.generate_seconds += time.perf_counter() - started
            for j, i in enumerate(where):
                n = requests[i].n
                out[i] = ([Completion(error=error) for _ in range(n)] if results is None
                          else self._completions(results[j], len(ids[i]), self._stops(requests[i]),
                                                 requests[i].cache_key))
        return [c if c is not None else [] for c in out]


class AsyncVLLMEngine(_VLLMPrompts):
    """Generations from vLLM's `AsyncLLM` in this process, every request on its own.

    The loop then runs barrier-free: a problem's next step is submitted as soon as its own
    population is done, while other problems are still generating, so vLLM's continuous
    batching always has work.  With ``lockstep=True`` in the RSA config the loop still sends
    a whole step at once (the paper's batching) through the same engine.

    `model` is a checkpoint path / hub id (an `AsyncLLM` is built from `AsyncEngineArgs` with
    `engine_kwargs`) or an existing `AsyncLLM`.  The engine belongs to the event loop it first
    generates on: `rsa_plugins.run` keeps one background loop for that.  `n_per_request=False`
    sends each sample of the first step as its own request (its own seed, and its own
    `sampling_hook` call).  ``requests`` counts requests sent, ``in_flight_max`` the most at
    once (both read from `busy_clock`).

    Data parallelism is vLLM's own: ``data_parallel_size=D`` (an engine argument) starts D
    engine cores behind this one `AsyncLLM`.  With `affinity` (the default) the requests of
    one problem in flight go to one core (`Placement`: vLLM's ``data_parallel_rank``), so the
    problem's shared prompt prefix is cached there once; ``affinity=False`` leaves every
    request to vLLM's load balancer.  `stats()` gives, per core, the requests, prompt tokens
    and prefix-cache hits vLLM reported, and the generated tokens.
    """

    name = "vllm-async"
    prefers_lockstep = False

    def __init__(self, model: Any, *, tokenizer: Any = None, max_model_len: int | None = None,
                 stop: Sequence[str] | None = None, think_end_token: str | None = None,
                 chat_template: str | None = None, chat_template_kwargs: dict[str, Any] | None = None,
                 render: Render | None = None, encode: Encode | None = None,
                 sampling_hook: SamplingHook | None = None, n_per_request: bool = True,
                 lora_request: Any = None, concurrency: int | None = None,
                 affinity: bool = True, **engine_kwargs: Any) -> None:
        del concurrency  # vLLM's scheduler decides how many run at once
        if isinstance(model, str):
            self.llm = build_async_llm(model, _engine_options(max_model_len, engine_kwargs))
            self.model_name = model
        else:
            if engine_kwargs:
                raise TypeError(f"options {sorted(engine_kwargs)} only apply when AsyncVLLMEngine "
                                "builds the engine itself (pass a model path, not an AsyncLLM)")
            self.llm = model
            self.model_name = _model_name(model)
        #: per engine core, what it reported (filled by `build_async_llm`'s stat logger)
        self.ranks: dict[int, dict[str, int]] = getattr(self.llm, "rsa_rank_stats", {})
        self.supports_n = bool(n_per_request)
        self._setup(tokenizer if tokenizer is not None else self.llm.get_tokenizer(),
                    max_model_len, _engine_max_len(self.llm), stop, think_end_token,
                    chat_template, chat_template_kwargs, render, encode, sampling_hook)
        self.lora_request = lora_request
        self.data_parallel_size = data_parallel_size(self.llm)
        self.placement = Placement(self.data_parallel_size) if (
            affinity and self.data_parallel_size > 1) else None
        self._ids = itertools.count()

    @property
    def requests(self) -> int:
        """Requests sent so far."""
        return self.busy_clock.requests

    @property
    def in_flight_max(self) -> int:
        """The most requests inside the engine at once so far (settable, to start over)."""
        return self.busy_clock.inside_max

    @in_flight_max.setter
    def in_flight_max(self, value: int) -> None:
        self.busy_clock.inside_max = value

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        ids = self.encode([self.render(r) for r in requests])
        return list(await asyncio.gather(*(self._one(r, t) for r, t in zip(requests, ids))))

    async def _one(self, req: Request, toks: list[int]) -> list[Completion]:
        from vllm import TokensPrompt

        sp, failed = self._sampling(req, toks)
        if sp is None:
            return failed or []
        options: dict[str, Any] = {"lora_request": self.lora_request}
        rank = self.placement.pick(req.cache_key) if self.placement is not None else None
        if rank is not None:
            options["data_parallel_rank"] = rank
        self.busy_clock.enter()
        try:
            final = await final_output(self.llm, TokensPrompt(prompt_token_ids=toks), sp,
                                       f"rsa-{next(self._ids)}", **options)
        except Exception as exc:  # noqa: BLE001 - this request failed; the others go on
            return [Completion(error=describe_error(exc)) for _ in range(req.n)]
        finally:
            self.busy_clock.leave()
            if rank is not None:
                self.placement.done(rank, req.cache_key)  # type: ignore[union-attr]
        if final is None:
            return [Completion(error="vLLM returned no output") for _ in range(req.n)]
        return self._completions(final, len(toks), self._stops(req), req.cache_key)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "data_parallel_size": self.data_parallel_size,
                "affinity": self.placement is not None}

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        if self.placement is not None:
            out["placed"] = list(self.placement.placed)
        if self.ranks:
            out["ranks"] = [{"rank": r, **v} for r, v in sorted(self.ranks.items())]
        return out

    async def aclose(self) -> None:
        """Stop vLLM's engine processes (the engine cannot generate afterwards)."""
        shutdown = getattr(self.llm, "shutdown", None)
        if shutdown is not None:
            shutdown()


def build_async_llm(model: str, options: dict[str, Any]) -> Any:
    """vLLM's `AsyncLLM` for `model` with engine arguments `options`.

    Built in vLLM's offline usage context (the one `vllm.LLM` uses), so what the user leaves
    unset gets the offline engine's defaults: vLLM gives an `AsyncLLM` a much smaller
    scheduler budget otherwise (on an H200 ``max_num_batched_tokens`` 2,048 instead of 16,384,
    CUDA graphs up to batch 256 instead of 512), which makes barrier-free RSA no faster than
    lockstep.  ``rsa_rank_stats`` collects what each engine core (data-parallel rank)
    reported: requests scheduled, prompt tokens looked up in and found in its prefix cache,
    tokens generated."""
    from vllm import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    ranks: dict[int, dict[str, int]] = {}
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **options),
                                    usage_context=UsageContext.LLM_CLASS,
                                    stat_loggers=[_rank_stats_logger(ranks)])
    llm.rsa_rank_stats = ranks
    return llm


async def final_output(llm: Any, prompt: Any, sampling: Any, request_id: str,
                       **options: Any) -> Any:
    """The finished output of one request on an `AsyncLLM` (None if it gave none); `sampling`
    is set to report only that, not every token."""
    from vllm.sampling_params import RequestOutputKind

    sampling.output_kind = RequestOutputKind.FINAL_ONLY
    final = None
    async for out in llm.generate(prompt, sampling, request_id, **options):
        final = out
    return final


def _rank_stats_logger(ranks: dict[int, dict[str, int]]) -> Any:
    """A per-engine-core stat logger factory for `AsyncLLM` that sums into `ranks`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class RankStats(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.mine = ranks.setdefault(engine_index, {
                "requests": 0, "prompt_tokens": 0, "cached_tokens": 0, "generated_tokens": 0})

        def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any,
                   **kwargs: Any) -> None:
            cache = getattr(scheduler_stats, "prefix_cache_stats", None)
            if cache is not None:
                self.mine["requests"] += int(getattr(cache, "requests", 0) or 0)
                self.mine["prompt_tokens"] += int(getattr(cache, "queries", 0) or 0)
                self.mine["cached_tokens"] += int(getattr(cache, "hits", 0) or 0)
            if iteration_stats is not None:
                self.mine["generated_tokens"] += int(
                    getattr(iteration_stats, "num_generation_tokens", 0) or 0)

        def log_engine_initialized(self) -> None:
            pass

    return RankStats


def data_parallel_size(llm: Any) -> int:
    """Engine cores behind an `AsyncLLM` (vLLM's ``data_parallel_size``; 1 if unknown)."""
    try:
        return max(1, int(llm.vllm_config.parallel_config.data_parallel_size))
    except (AttributeError, TypeError, ValueError):
        return 1
