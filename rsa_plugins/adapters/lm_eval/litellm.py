"""``rsa-litellm``: RSA over any LiteLLM model, as an lm-eval model (generative tasks only)."""

from __future__ import annotations

import json
from typing import Any

from lm_eval.api.model import LM

from ..._background import run_sync
from ...config import RSAConfig
from ...engines.base import Engine
from ...engines.litellm import LiteLLMEngine
from ...loop import RSALoop
from ...types import Message, Problem, RSAResult
from .generate import RSAGenerateMixin, logger
from .options import RSAOptions, check_model_args

#: model_args passed on to every chat-completions request body as they are
PASS_THROUGH = ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
                "reasoning_effort")


class RSALiteLLM(RSAGenerateMixin, LM):
    """``rsa-litellm``: RSA over any LiteLLM model (hosted APIs, vLLM / SGLang servers, ...).

    model_args: ``model`` (a LiteLLM model string), ``api_base`` (or ``base_url``),
    ``api_key``, ``timeout``, ``max_retries``, ``use_n``, ``transport``, ``max_model_len`` (else
    learned from a vLLM server), ``max_gen_toks`` (used when a task sets none), the RSA
    parameters (``population``, ``aggregation_size``, ``steps``, ``selection``, ``seed``,
    ``temperature``, ``top_p``, ``view``, ``concurrency``, ...; an ``rsa_`` prefix is accepted
    too), ``trace``, ``resume``, ``progress``, and the request fields in `PASS_THROUGH`.  Any
    other key is an error.
    """

    def __init__(self, model: str | None = None, api_base: str | None = None,
                 base_url: str | None = None, api_key: str | None = None,
                 max_gen_toks: int = 2048, timeout: float = 600.0, max_retries: int = 6,
                 use_n: bool | None = None, max_model_len: int | None = None,
                 transport: str = "auto", batch_size: Any = None, max_batch_size: Any = None,
                 device: Any = None, **kwargs: Any) -> None:
        del batch_size, max_batch_size, device  # set by the CLI; concurrency replaces them
        options = RSAOptions.pop_from(kwargs)
        check_model_args("rsa-litellm", kwargs, PASS_THROUGH)
        super().__init__()
        if not model:
            raise ValueError("rsa-litellm needs model=<LiteLLM model string>, e.g. "
                             "--model_args model=openai/gpt-4o-mini or "
                             "model=hosted_vllm/NAME,api_base=http://HOST:PORT/v1")
        self._init_rsa(options)
        self._max_gen_toks = int(max_gen_toks)
        if api_key:
            logger.warning(
                "rsa-litellm: api_key was given in --model_args, which lm-eval prints and writes "
                "into its results files; set the provider's environment variable instead "
                "(e.g. OPENAI_API_KEY, HOSTED_VLLM_API_KEY)")
        self.engine = LiteLLMEngine(
            str(model), api_base=api_base or base_url, api_key=api_key,
            concurrency=options.config.concurrency, timeout=float(timeout),
            max_retries=int(max_retries), use_n=use_n, transport=transport,
            max_model_len=int(max_model_len) if max_model_len else None, **kwargs)
        self.model_name = str(model)

    def _rsa_engine(self, config: RSAConfig) -> tuple[Engine, RSAConfig]:
        return self.engine, config

    def _rsa_run(self, loop: RSALoop, problems: list[Problem]) -> list[RSAResult]:
        """On the shared background event loop; the engine's connections are closed after
        each run (they reopen on the next), so none is left open at exit."""
        async def go() -> list[RSAResult]:
            try:
                return await loop.run(problems)
            finally:
                await self.engine.aclose()

        return run_sync(go())

    def apply_chat_template(self, chat_history: list[Message],
                            add_generation_prompt: bool = True) -> str:
        """The messages as JSON (like lm-eval's API models); RSA reads the chat back."""
        return self._remember_chat(json.dumps(chat_history, ensure_ascii=False), chat_history)

    @property
    def tokenizer_name(self) -> str:
        return self.model_name.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str:
        return ""

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError(_no_loglikelihood(requests))

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError(_no_loglikelihood(requests))


def _no_loglikelihood(requests: list[Any]) -> str:
    tasks = sorted({str(getattr(r, "task_name", "?")) for r in requests})
    return (f"rsa-litellm runs generative tasks only, but {', '.join(tasks)} score(s) "
            "log-likelihoods (multiple-choice or perplexity tasks), which RSA does not apply "
            "to and chat APIs do not return. Use a generative variant (for example "
            "gpqa_diamond_cot_zeroshot instead of gpqa_diamond_zeroshot), or --model rsa-vllm, "
            "which scores log-likelihoods with plain vLLM.")
