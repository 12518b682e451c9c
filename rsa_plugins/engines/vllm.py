"""In-process vLLM engine: every RSA step is one `vllm.LLM.generate` call.

The engine prefers lockstep, so the loop hands it every problem's requests of a step at once
(the first step as one request with ``n=N`` per problem).  Chat messages are rendered with the
model's own chat template and tokenised here, and each prompt is fitted to the context: the
generation budget shrinks to the room left; a prompt that leaves no room fails alone (as a
`Completion` with `error`), it does not sink the batch.  With `think_end_token` the text before
the last marker is kept apart as `reasoning`, so candidate views show it only when asked
(``include_reasoning``).

    engine = VLLMEngine("HuggingFaceTB/SmolLM2-135M-Instruct", max_model_len=2048)
    results = rsa_plugins.run(problems, model=engine, population=8, steps=3)

`make_engine("vllm:<path or id>", ...)` builds one from a model string; options that are not
the engine's own go to ``vllm.LLM`` unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..types import Completion, Request
from .base import Engine

#: render(request) -> prompt text (already chat-templated) for one request
Render = Callable[[Request], str]
#: encode(texts) -> token ids for each text, as the model expects them (BOS included)
Encode = Callable[[list[str]], list[list[int]]]


class VLLMEngine(Engine):
    """Generations from a `vllm.LLM` running in this process.

    `model` is a checkpoint path / hub id (an `LLM` is built with `llm_kwargs`) or an existing
    `vllm.LLM`.  `stop`: stop strings for every request.  `render` / `encode` replace the chat
    rendering and tokenisation (the lm-eval adapter uses them to keep lm-eval's own prompt for
    the first step).  ``calls`` counts `LLM.generate` calls and ``generate_seconds`` the time
    spent inside them.
    """

    name = "vllm"
    supports_n = True
    prefers_lockstep = True

    def __init__(self, model: Any, *, tokenizer: Any = None, max_model_len: int | None = None,
                 stop: Sequence[str] | None = None, think_end_token: str | None = None,
                 chat_template: str | None = None, chat_template_kwargs: dict[str, Any] | None = None,
                 render: Render | None = None, encode: Encode | None = None,
                 use_tqdm: bool = False, lora_request: Any = None, concurrency: int | None = None,
                 **llm_kwargs: Any) -> None:
        del concurrency  # a LiteLLM option `rsa_plugins.run` passes to every engine; vLLM batches
        if isinstance(model, str):
            from vllm import LLM

            if max_model_len is not None:
                llm_kwargs.setdefault("max_model_len", int(max_model_len))
            if _on_cpu():
                # vLLM's CPU build crashes ("CPU Generator does not use offset") when seeded
                # requests meet chunked prefill; a large prefill budget avoids the chunking
                llm_kwargs.setdefault("max_num_batched_tokens", 16384)
            self.llm = LLM(model=model, **llm_kwargs)
            self.model_name = model
        else:
            if llm_kwargs:
                raise TypeError(f"options {sorted(llm_kwargs)} only apply when VLLMEngine builds "
                                "the LLM itself (pass a model path, not an LLM)")
            self.llm = model
            try:
                self.model_name = str(model.llm_engine.model_config.model)
            except AttributeError:
                self.model_name = type(model).__name__
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        engine_len = _engine_max_len(self.llm)
        self.max_model_len = min(x for x in (max_model_len, engine_len) if x) if (
            max_model_len or engine_len) else None
        self.stop = list(stop or [])
        self.think_end_token = think_end_token
        self.chat_template = chat_template
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self._render, self._encode = render, encode
        self.use_tqdm, self.lora_request = use_tqdm, lora_request
        self.calls = 0
        self.generate_seconds = 0.0
        #: token ids and max_tokens of the last batch (for benchmarks and tests)
        self.last_batch: list[tuple[list[int], int, int]] = []

    # ----------------------------------------------------------------- prompts

    def render(self, req: Request) -> str:
        """The prompt text of a request: its messages through the chat template, if any."""
        if self._render is not None:
            return self._render(req)
        tok = self.tokenizer
        if self.chat_template is not None or getattr(tok, "chat_template", None):
            return tok.apply_chat_template(
                req.messages, tokenize=False, add_generation_prompt=True,
                chat_template=self.chat_template, **self.chat_template_kwargs)
        return "\n\n".join(m["content"] for m in req.messages)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of rendered prompts (no second BOS when the template already added one)."""
        if self._encode is not None:
            return self._encode(texts)
        bos = getattr(self.tokenizer, "bos_token", None)
        return [self.tokenizer.encode(t, add_special_tokens=not (bos and t.startswith(bos)))
                for t in texts]

    async def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Exact prompt length: the messages rendered by the chat template, then encoded."""
        return len(self.encode([self.render(Request(messages=messages, seed=0))])[0])

    # ----------------------------------------------------------------- generation

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        from vllm import SamplingParams, TokensPrompt

        ids = self.encode([self.render(r) for r in requests])
        out: list[list[Completion] | None] = [None] * len(requests)
        prompts, params, where = [], [], []
        for i, (req, toks) in enumerate(zip(requests, ids)):
            max_tokens = req.max_tokens
            if self.max_model_len:
                room = self.max_model_len - len(toks)
                if room < 1:
                    msg = (f"prompt of {len(toks)} tokens leaves no room to generate in the "
                           f"context of {self.max_model_len} tokens")
                    out[i] = [Completion(error=msg) for _ in range(req.n)]
                    continue
                max_tokens = min(max_tokens or room, room)
            sampling: dict[str, Any] = {"n": req.n, "seed": req.seed,
                                        "temperature": req.temperature, "max_tokens": max_tokens}
            if req.top_p is not None:
                sampling["top_p"] = req.top_p
            if self.stop and not self.think_end_token:
                # with thinking, stops (often "\n\n") would fire inside the thinking: they
                # are applied to the answer afterwards instead, as lm-eval's vLLM backend does
                sampling["stop"] = list(self.stop)
            sampling.update(req.extra)
            try:
                params.append(SamplingParams(**sampling))
            except (TypeError, ValueError) as exc:
                out[i] = [Completion(error=f"bad sampling parameters: {exc}") for _ in range(req.n)]
                continue
            prompts.append(TokensPrompt(prompt_token_ids=toks))
            where.append(i)
        self.last_batch = [(ids[i], p.max_tokens or 0, p.n) for i, p in zip(where, params)]
        if prompts:
            started = time.perf_counter()
            try:
                results = self.llm.generate(prompts, sampling_params=params, use_tqdm=self.use_tqdm,
                                            lora_request=self.lora_request)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: report it per request
                results = None
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            finally:
                self.calls += 1
                self.generate_seconds += time.perf_counter() - started
            for j, i in enumerate(where):
                n = requests[i].n
                out[i] = ([Completion(error=error) for _ in range(n)] if results is None
                          else self._completions(results[j], len(ids[i])))
        return [c if c is not None else [] for c in out]

    def _completions(self, result: Any, prompt_tokens: int) -> list[Completion]:
        comps = []
        for k, o in enumerate(result.outputs):
            text, reasoning = o.text, None
            if self.think_end_token:
                if self.think_end_token in text:
                    reasoning, _, text = text.rpartition(self.think_end_token)
                    text = text.lstrip()
                for s in self.stop:
                    if s:
                        text = text.split(s, 1)[0]
            comps.append(Completion(
                text=text, reasoning=reasoning, prompt_tokens=prompt_tokens if k == 0 else 0,
                completion_tokens=len(o.token_ids), finish_reason=o.finish_reason))
        return comps

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "model": self.model_name, "max_model_len": self.max_model_len}


def _engine_max_len(llm: Any) -> int | None:
    try:
        return int(llm.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        return None


def _on_cpu() -> bool:
    """Whether vLLM runs on its CPU platform."""
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001 - unknown platform API: assume a GPU build
        return False
