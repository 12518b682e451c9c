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
from collections.abc import Callable, Sequence
from typing import Any

from ..busy import BusyClock
from ..types import Completion, Message, Request
from .base import Engine
from .placement import Placement

#: render(messages) -> prompt text of chat messages (chat template applied; a last assistant
#: message is a prefill to continue)
Render = Callable[[list[Message]], str]
#: encode(texts) -> token ids for each text, as the model expects them (BOS included)
Encode = Callable[[list[str]], list[list[int]]]
#: sampling_hook(request) -> extra SamplingParams fields for it (e.g. forced lengths in benchmarks)
SamplingHook = Callable[[Request], dict[str, Any]]


class _VLLMPrompts(Engine):
    """What both vLLM engines share: chat rendering, tokenising, fitting and parsing outputs."""

    tokenizer: Any
    max_model_len: int | None

    def _setup(self, tokenizer: Any, max_model_len: int | None, engine_len: int | None,
               stop: Sequence[str] | None, think_end_token: str | None,
               chat_template: str | None, chat_template_kwargs: dict[str, Any] | None,
               render: Render | None, encode: Encode | None,
               sampling_hook: SamplingHook | None) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = min(x for x in (max_model_len, engine_len) if x) if (
            max_model_len or engine_len) else None
        self.stop = list(stop or [])
        self.think_end_token = think_end_token
        self.chat_template = chat_template
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self._render, self._encode, self.sampling_hook = render, encode, sampling_hook
        #: token ids, max_tokens and n of the last batch (for benchmarks and tests)
        self.last_batch: list[tuple[list[int], int, int]] = []
        #: prompt tokens sent and those vLLM found in its prefix cache
        self.prompt_tokens_sent = 0
        self.cached_tokens = 0
        #: the same per request key (one problem's requests share a key): [prompt, cached]
        self.prefix_by_key: dict[str, list[int]] = {}
        #: when requests are inside vLLM (the engine-busy fraction, `rsa_plugins.busy`)
        self.busy_clock = BusyClock()

    def render(self, req: Request) -> str:
        """The prompt text of a request: its chat through the chat template (``render`` if
        given), or its messages joined as plain text when the request is not a chat."""
        if not req.chat:
            return "\n\n".join(m["content"] for m in req.messages)
        if self._render is not None:
            return self._render(req.messages)
        tok = self.tokenizer
        if self.chat_template is not None or getattr(tok, "chat_template", None):
            prefill = req.prefill is not None
            return tok.apply_chat_template(
                req.messages, tokenize=False, add_generation_prompt=not prefill,
                continue_final_message=prefill, chat_template=self.chat_template,
                **self.chat_template_kwargs)
        return "\n\n".join(m["content"] for m in req.messages)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of rendered prompts (no second BOS when the template already added one)."""
        if self._encode is not None:
            return self._encode(texts)
        bos = getattr(self.tokenizer, "bos_token", None)
        with_bos = [bool(bos) and t.startswith(bos) for t in texts]
        out: list[list[int]] = [[] for _ in texts]
        for has_bos in (True, False):  # one batch call each: fast tokenizers encode in parallel
            where = [i for i, b in enumerate(with_bos) if b == has_bos]
            if where:
                ids = self.tokenizer([texts[i] for i in where],
                                     add_special_tokens=not has_bos)["input_ids"]
                for i, x in zip(where, ids):
                    out[i] = list(x)
        return out

    async def prompt_tokens(self, request: Request) -> int:
        """Exact prompt length: the messages rendered by the chat template, then encoded."""
        return len(self.encode([self.render(request)])[0])

    def prompt_tokens_bound(self, request: Request) -> int | None:
        """Characters of the rendered prompt (+1 for a BOS): no token is shorter than one."""
        return len(self.render(request)) + 1

    def _stops(self, req: Request) -> list[str]:
        return [*self.stop, *(s for s in req.stop if s not in self.stop)]

    def _sampling(self, req: Request, toks: list[int]) -> tuple[Any, list[Completion] | None]:
        """(SamplingParams, None) for a request, or (None, its failed completions)."""
        from vllm import SamplingParams

        room = self.max_model_len - len(toks) if self.max_model_len else None
        if room is not None and room < 1:
            msg = (f"prompt of {len(toks)} tokens leaves no room to generate in the "
                   f"context of {self.max_model_len} tokens")
            return None, [Completion(error=msg) for _ in range(req.n)]
        sampling: dict[str, Any] = {"n": req.n, "seed": req.seed,
                                    "temperature": req.temperature, "max_tokens": req.max_tokens}
        if req.top_p is not None:
            sampling["top_p"] = req.top_p
        stops = self._stops(req)
        if stops and not self.think_end_token:
            # with thinking, stops (often "\n\n") would fire inside the thinking: they are
            # applied to the answer afterwards instead, as lm-eval's vLLM backend does
            sampling["stop"] = stops
        sampling.update(req.extra)
        if self.sampling_hook is not None:
            sampling.update(self.sampling_hook(req))
        if room is not None:  # the generation budget never exceeds the room left
            sampling["max_tokens"] = min(sampling["max_tokens"] or room, room)
            if sampling.get("min_tokens"):
                sampling["min_tokens"] = min(sampling["min_tokens"], sampling["max_tokens"])
        try:
            return SamplingParams(**sampling), None
        except Exception as exc:  # noqa: BLE001 - vLLM's own validation errors vary by release
            return None, [Completion(error=f"bad sampling parameters: {exc}")
                          for _ in range(req.n)]

    def _completions(self, result: Any, prompt_tokens: int, stops: list[str],
                     key: str | None = None) -> list[Completion]:
        cached = getattr(result, "num_cached_tokens", None) or 0
        self.prompt_tokens_sent += prompt_tokens
        self.cached_tokens += cached
        if key is not None:
            counts = self.prefix_by_key.setdefault(key, [0, 0])
            counts[0] += prompt_tokens
            counts[1] += cached
        comps = []
        for k, o in enumerate(result.outputs):
            text, reasoning = o.text, None
            if self.think_end_token:
                if self.think_end_token in text:
                    reasoning, _, text = text.rpartition(self.think_end_token)
                    text = text.lstrip()
                for s in stops:
                    if s:
                        text = text.split(s, 1)[0]
            comps.append(Completion(
                text=text, reasoning=reasoning, prompt_tokens=prompt_tokens if k == 0 else 0,
                completion_tokens=len(o.token_ids), finish_reason=o.finish_reason))
        return comps

    @property
    def prefix_hit_rate(self) -> float:
        """Share of prompt tokens served from vLLM's prefix cache so far."""
        return self.cached_tokens / self.prompt_tokens_sent if self.prompt_tokens_sent else 0.0

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "model": self.model_name, "max_model_len": self.max_model_len}

    def stats(self) -> dict[str, Any]:
        """Engine-busy figures (`rsa_plugins.busy`) and prefix-cache hits so far; per problem
        (request key): how many problems and the spread of their own hit rates."""
        per_key = sorted(c / p for p, c in self.prefix_by_key.values() if p)
        out: dict[str, Any] = {"busy": self.busy_clock.snapshot(),
                               "prompt_tokens": self.prompt_tokens_sent,
                               "cached_tokens": self.cached_tokens,
                               "prefix_hit_rate": round(self.prefix_hit_rate, 4)}
        if per_key:
            out["prefix_hit_rate_per_problem"] = {
                "problems": len(per_key), "min": round(per_key[0], 4),
                "median": round(per_key[len(per_key) // 2], 4), "max": round(per_key[-1], 4)}
        return out


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
                results, error = None, _error_text(exc)
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
    `sampling_hook` call).  ``requests`` counts requests sent; ``in_flight_max`` the most at once.

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
        self.ranks: dict[int, dict[str, int]] = {}
        if isinstance(model, str):
            self.llm = build_async_llm(model, _engine_options(max_model_len, engine_kwargs),
                                       self.ranks)
            self.model_name = model
        else:
            if engine_kwargs:
                raise TypeError(f"options {sorted(engine_kwargs)} only apply when AsyncVLLMEngine "
                                "builds the engine itself (pass a model path, not an AsyncLLM)")
            self.llm = model
            self.model_name = _model_name(model)
            self.ranks = getattr(model, "rsa_rank_stats", self.ranks)
        self.supports_n = bool(n_per_request)
        self._setup(tokenizer if tokenizer is not None else self.llm.get_tokenizer(),
                    max_model_len, _engine_max_len(self.llm), stop, think_end_token,
                    chat_template, chat_template_kwargs, render, encode, sampling_hook)
        self.lora_request = lora_request
        self.data_parallel_size = data_parallel_size(self.llm)
        self.placement = Placement(self.data_parallel_size) if (
            affinity and self.data_parallel_size > 1) else None
        self._ids = itertools.count()
        self.requests = 0
        self.in_flight = self.in_flight_max = 0

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        ids = self.encode([self.render(r) for r in requests])
        return list(await asyncio.gather(*(self._one(r, t) for r, t in zip(requests, ids))))

    async def _one(self, req: Request, toks: list[int]) -> list[Completion]:
        from vllm import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sp, failed = self._sampling(req, toks)
        if sp is None:
            return failed or []
        sp.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, not per token
        options: dict[str, Any] = {"lora_request": self.lora_request}
        rank = self.placement.pick(req.cache_key) if self.placement is not None else None
        if rank is not None:
            options["data_parallel_rank"] = rank
        self.requests += 1
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        self.busy_clock.enter()
        final = None
        try:
            async for out in self.llm.generate(TokensPrompt(prompt_token_ids=toks), sp,
                                               f"rsa-{next(self._ids)}", **options):
                final = out
        except Exception as exc:  # noqa: BLE001 - this request failed; the others go on
            return [Completion(error=_error_text(exc)) for _ in range(req.n)]
        finally:
            self.busy_clock.leave()
            self.in_flight -= 1
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


def build_async_llm(model: str, options: dict[str, Any],
                    ranks: dict[int, dict[str, int]] | None = None) -> Any:
    """vLLM's `AsyncLLM` for `model` with engine arguments `options`; when `ranks` is given,
    it collects what each engine core (data-parallel rank) reported: requests scheduled,
    prompt tokens looked up in and found in its prefix cache, tokens generated."""
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    loggers = [_rank_stats_logger(ranks)] if ranks is not None else None
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **options),
                                    stat_loggers=loggers)
    llm.rsa_rank_stats = ranks if ranks is not None else {}
    return llm


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


def _engine_options(max_model_len: int | None, options: dict[str, Any]) -> dict[str, Any]:
    options = dict(options)
    if max_model_len is not None:
        options.setdefault("max_model_len", int(max_model_len))
    if _on_cpu():
        # vLLM's CPU build crashes ("CPU Generator does not use offset") when seeded requests
        # meet chunked prefill; a large prefill budget avoids the chunking
        options.setdefault("max_num_batched_tokens", 16384)
    return options


def _model_name(engine: Any) -> str:
    try:
        return str(engine.model_config.model)
    except AttributeError:
        return type(engine).__name__


def _engine_max_len(engine: Any) -> int | None:
    try:
        return int(engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        return None


def _error_text(exc: BaseException) -> str:
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


def _on_cpu() -> bool:
    """Whether vLLM runs on its CPU platform."""
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001 - unknown platform API: assume a GPU build
        return False
