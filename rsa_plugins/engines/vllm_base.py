"""What both in-process vLLM engines share (`rsa_plugins.engines.vllm`): chat rendering,
tokenising, sampling parameters that fit the context, and parsing vLLM's outputs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ..busy import BusyClock
from ..types import Completion, Message, Request
from .base import Engine


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
        """Bytes of the rendered prompt (+1 for a BOS): a byte-level tokenizer makes at most
        one token of a byte (not of a character: a character outside ASCII can be several)."""
        text = self.render(request)
        return (len(text) if text.isascii() else len(text.encode())) + 1

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
        """Engine, model, context and the settings vLLM runs with (`engine_settings`)."""
        return {"engine": self.name, "model": self.model_name, "max_model_len": self.max_model_len,
                "engine_settings": self.engine_settings()}

    def engine_settings(self) -> dict[str, Any]:
        """The scheduler budget and the rest vLLM actually runs with, read back from its
        config (`engine_settings`); empty for an engine without one (a stand-in)."""
        llm = getattr(self, "llm", None)
        llm = getattr(llm, "_llm", llm)  # a wrapper that meters it (rsa bench)
        config = getattr(llm, "vllm_config", None) or getattr(
            getattr(llm, "llm_engine", None), "vllm_config", None)
        return engine_settings(config) if config is not None else {}

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


#: settings that change how fast the same work runs: modes compared must agree on these
COMPARED_SETTINGS = ("max_num_batched_tokens", "max_num_seqs", "max_cudagraph_capture_size",
                     "cudagraph_mode", "enforce_eager", "enable_prefix_caching",
                     "enable_chunked_prefill", "max_model_len", "dtype",
                     "gpu_memory_utilization", "tensor_parallel_size", "data_parallel_size",
                     "vllm")


def engine_settings(config: Any) -> dict[str, Any]:
    """What a `VllmConfig` says the engine runs with: the scheduler budget
    (``max_num_batched_tokens``, ``max_num_seqs``), CUDA-graph capture (largest batch, mode),
    caching, context, precision, parallelism, KV-cache blocks and vLLM's version.  A field a
    vLLM release lacks is left out."""
    def get(section: str, name: str) -> Any:
        value = getattr(getattr(config, section, None), name, None)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(getattr(value, "name", value)).removeprefix("torch.")

    compilation = getattr(config, "compilation_config", None)
    sizes = list(getattr(compilation, "cudagraph_capture_sizes", None) or [])
    largest = get("compilation_config", "max_cudagraph_capture_size")
    out: dict[str, Any] = {
        "max_num_batched_tokens": get("scheduler_config", "max_num_batched_tokens"),
        "max_num_seqs": get("scheduler_config", "max_num_seqs"),
        "enable_chunked_prefill": get("scheduler_config", "enable_chunked_prefill"),
        "max_cudagraph_capture_size": largest if largest is not None else (
            max(sizes) if sizes else None),
        "cudagraph_capture_sizes": len(sizes),
        "cudagraph_mode": get("compilation_config", "cudagraph_mode"),
        "enforce_eager": get("model_config", "enforce_eager"),
        "enable_prefix_caching": get("cache_config", "enable_prefix_caching"),
        "max_model_len": get("model_config", "max_model_len"),
        "dtype": get("model_config", "dtype"),
        "gpu_memory_utilization": get("cache_config", "gpu_memory_utilization"),
        "num_gpu_blocks": get("cache_config", "num_gpu_blocks"),
        "block_size": get("cache_config", "block_size"),
        "tensor_parallel_size": get("parallel_config", "tensor_parallel_size"),
        "data_parallel_size": get("parallel_config", "data_parallel_size"),
        "vllm": _vllm_version()}
    return {k: v for k, v in out.items() if v is not None}


def differing_settings(by_mode: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{setting: {mode: value}} for each of `COMPARED_SETTINGS` on which the modes disagree."""
    out: dict[str, dict[str, Any]] = {}
    for key in COMPARED_SETTINGS:
        values = {mode: s.get(key) for mode, s in by_mode.items()}
        if len({repr(v) for v in values.values()}) > 1:
            out[key] = values
    return out


@functools.lru_cache(maxsize=1)
def _vllm_version() -> str | None:
    try:
        from vllm import __version__

        return str(__version__)
    except Exception:  # noqa: BLE001 - a stand-in engine without vLLM
        return None


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


def _on_cpu() -> bool:
    """Whether vLLM runs on its CPU platform."""
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001 - unknown platform API: assume a GPU build
        return False


def option_names(*engines: type[Engine]) -> set[str]:
    """The options in-process vLLM `engines` take: their own and ``vllm.EngineArgs``'s."""
    import dataclasses
    import inspect

    from vllm.engine.arg_utils import EngineArgs

    own = {p for e in engines for p in inspect.signature(e.__init__).parameters}
    return own | {f.name for f in dataclasses.fields(EngineArgs)}
