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
from .loglikelihood import PromptScorer, pending_loglikelihood
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

    Log-likelihood requests (multiple-choice tasks next to generative ones) are scored by
    lm-eval's own ``local-completions`` on the same server (`PromptScorer`; ``tokenizer`` and
    ``tokenizer_backend`` go to it); where the server returns no prompt log-probabilities, a run
    that has such tasks is refused before its first generation.
    """

    def __init__(self, model: str | None = None, api_base: str | None = None,
                 base_url: str | None = None, api_key: str | None = None,
                 max_gen_toks: int = 2048, timeout: float = 600.0, max_retries: int = 6,
                 use_n: bool | None = None, max_model_len: int | None = None,
                 transport: str = "auto", batch_size: Any = None, max_batch_size: Any = None,
                 device: Any = None, tokenizer: str | None = None,
                 tokenizer_backend: str | None = None, **kwargs: Any) -> None:
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
        self.scorer = PromptScorer(self.engine.openai_server(), {
            "tokenizer": tokenizer, "tokenizer_backend": tokenizer_backend,
            "num_concurrent": options.config.concurrency, "max_retries": int(max_retries),
            "timeout": int(timeout), "max_length": max_model_len})

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """RSA on every request, once it is known that the run's log-likelihood requests (if
        any) can be served: a run is refused before it pays for generations it would lose."""
        pending = pending_loglikelihood()
        if pending:
            self.scorer.prepare(pending, self.__dict__.get("_chats", {}))
        return super().generate_until(requests, disable_tqdm)

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
        rendered = json.dumps(chat_history, ensure_ascii=False)
        self.__dict__.setdefault("_chats", {})[rendered] = (chat_history, add_generation_prompt)
        return self._remember_chat(rendered, chat_history)

    @property
    def tokenizer_name(self) -> str:
        return self.model_name.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str:
        return ""

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        """Plain log-likelihoods (RSA does not apply), from the server's prompt log-probs."""
        return self.scorer.score("loglikelihood", requests, disable_tqdm,
                                 self.__dict__.get("_chats", {}))

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self.scorer.score("loglikelihood_rolling", requests, disable_tqdm)
