"""``rsa-vllm``: lm-eval's ``vllm`` model with RSA in place of plain sampling.

lm-eval's vLLM module imports vllm at import time; the registry imports this module only when
``--model rsa-vllm`` is used.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import inspect
from collections.abc import Sequence
from typing import Any

from lm_eval.models.vllm_causallms import VLLM

from ..._background import run_sync
from ...config import RSAConfig
from ...engines.base import Engine
from ...engines.vllm import AsyncVLLMEngine, VLLMEngine, build_async_llm, final_output
from ...engines.vllm_base import _engine_options
from ...loop import RSALoop
from ...types import Message, Problem, RSAResult
from ...validate import ConfigError, check_bool
from ._compat import vllm_builds
from .generate import RSAGenerateMixin
from .options import RSAOptions, check_model_args

#: model_args of rsa-vllm's own (not RSA's, lm-eval's or vLLM's)
OWN_ARGS = ("affinity",)


class RSAVLLM(RSAGenerateMixin, VLLM):
    """lm-eval's vLLM model; `generate_until` runs RSA, everything else is inherited.

    model_args: the RSA parameters (``population``, ``aggregation_size``, ``steps``,
    ``selection``, ``seed``, ``temperature``, ``top_p``, ``max_tokens``, ``view``,
    ``tail_tokens``, ``include_reasoning``, ``kind``, ``template``, ``sampling``,
    ``lockstep``; also with an ``rsa_`` prefix), ``trace`` (JSONL trajectory, resumed when it
    exists) and ``resume``.  Every other argument goes to lm-eval's ``vllm`` model and from
    there to vLLM's engine.  ``seed`` seeds both RSA and the engine.

    Barrier-free by default: one vLLM ``AsyncLLM`` in this process serves RSA (each problem
    moves to its next step as soon as its own N generations are done) and lm-eval's
    log-likelihood requests; the model is loaded once.  ``lockstep=True`` keeps lm-eval's
    own ``vllm.LLM`` and sends each RSA step as one ``LLM.generate`` (the paper's batching).

    ``data_parallel_size=D`` is vLLM's own data parallelism: D engine cores behind the one
    ``AsyncLLM`` (on GPUs ``tensor_parallel_size`` GPUs each), requests balanced by vLLM; the
    requests of one problem in flight go to one core, where its prompt prefix is cached
    (``affinity=False``: vLLM's balancer places every request).  With ``lockstep=True`` and
    D > 1, whole steps go to that same engine.  Ray is not needed.
    """

    def __init__(self, pretrained: str, **kwargs: Any) -> None:
        options = RSAOptions.pop_from(kwargs)
        check_model_args("rsa-vllm", kwargs, _engine_args() | set(OWN_ARGS))
        affinity = check_bool("affinity", kwargs.pop("affinity", True))
        dp = _data_parallel_size(kwargs.pop("data_parallel_size", 1))
        if "seed" in options.explicit:
            kwargs["seed"] = options.config.seed
        kwargs.pop("device", None)  # the CLI always sends one; vLLM picks devices itself
        self._barrier_free = not options.config.lockstep or dp > 1
        if self._barrier_free:  # lm-eval builds vLLM's AsyncLLM where it would build an LLM
            with vllm_builds(functools.partial(AsyncLLMModel, data_parallel_size=dp)):
                super().__init__(pretrained=pretrained, **kwargs)
        else:
            super().__init__(pretrained=pretrained, **kwargs)
        self._init_rsa(options)
        self.rsa_data_parallel_size = dp
        self._affinity = affinity
        self._engine: Engine | None = None

    def apply_chat_template(self, chat_history: list[Message],
                            add_generation_prompt: bool = True) -> str:
        """lm-eval's rendering; the messages are remembered to re-render aggregation turns."""
        rendered = super().apply_chat_template(chat_history, add_generation_prompt)
        return self._remember_chat(rendered, chat_history)

    def close(self) -> None:
        """Stop vLLM's engine processes (also done at exit)."""
        shutdown = getattr(self.model, "shutdown", None)
        if self._barrier_free and shutdown is not None:
            shutdown()

    # ------------------------------------------------------------ RSA hooks

    def _rsa_engine(self, config: RSAConfig) -> tuple[Engine, RSAConfig]:
        if self._engine is None:
            common = {"tokenizer": self.tokenizer, "max_model_len": self.max_length,
                      "think_end_token": self.think_end_token, "render": self._render,
                      "encode": self.tok_encode, "lora_request": self.lora_request}
            if self._barrier_free:
                self._engine = AsyncVLLMEngine(self.model.async_llm, affinity=self._affinity,
                                               **common)
            else:
                self._engine = VLLMEngine(self.model, **common)
        # lm-eval's own defaults for its vLLM model: keep special tokens in the text
        sampling = {"skip_special_tokens": False, "spaces_between_special_tokens": False,
                    **config.sampling}
        return self._engine, config.replace(sampling=sampling)

    def _rsa_run(self, loop: RSALoop, problems: list[Problem]) -> list[RSAResult]:
        """The AsyncLLM lives on the background event loop; the offline LLM runs in this
        thread (or on the background loop inside a running one)."""
        if self._barrier_free or _loop_running():
            return run_sync(loop.run(problems))
        return asyncio.run(loop.run(problems))

    def _render(self, messages: list[Message]) -> str:
        """A chat rendered exactly as lm-eval's vLLM model renders it (its template settings)."""
        prefill = messages[-1]["role"] == "assistant"
        return VLLM.apply_chat_template(self, messages, add_generation_prompt=not prefill)


class AsyncLLMModel:
    """What lm-eval's vLLM model holds as ``self.model`` on the barrier-free path: vLLM's
    ``AsyncLLM`` (``async_llm``), with the synchronous ``generate`` lm-eval calls for
    log-likelihoods and the ``llm_engine.model_config`` it reads."""

    def __init__(self, model: str, data_parallel_size: int = 1, **engine_args: Any) -> None:
        options = {k: v for k, v in engine_args.items() if v is not None}
        if data_parallel_size > 1:
            options["data_parallel_size"] = data_parallel_size
        self.async_llm = build_async_llm(model, _engine_options(None, options))
        self.llm_engine = self.async_llm  # lm-eval reads llm_engine.model_config
        self._ids = 0
        self._closed = False
        # shut down at exit before the background loop stops (atexit runs last-registered
        # first): the loop must be there for it
        run_sync(asyncio.sleep(0))
        atexit.register(self.shutdown)

    def get_tokenizer(self) -> Any:
        return self.async_llm.get_tokenizer()

    def generate(self, prompts: Sequence[Any], sampling_params: Any = None,
                 use_tqdm: bool = False, lora_request: Any = None) -> list[Any]:
        """`vllm.LLM.generate` for lm-eval: every prompt at once, outputs in order."""
        del use_tqdm
        params = (sampling_params if isinstance(sampling_params, list)
                  else [sampling_params] * len(prompts))
        return run_sync(self._generate(list(prompts), params, lora_request))

    async def _generate(self, prompts: list[Any], params: list[Any], lora: Any) -> list[Any]:
        async def one(prompt: Any, sp: Any) -> Any:
            self._ids += 1
            return await final_output(self.async_llm, prompt, sp.clone(), f"lm-eval-{self._ids}",
                                      lora_request=lora)

        return list(await asyncio.gather(*(one(p, sp) for p, sp in zip(prompts, params))))

    def shutdown(self) -> None:
        """Stop vLLM's engine processes (idempotent).  Done on the background loop that runs
        the engine's output handler: called from another thread after that loop stopped, a
        data-parallel engine's shutdown hung (seen with vLLM 0.26 on two H200s)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)

        async def stop() -> None:
            self.async_llm.shutdown()

        try:
            run_sync(stop())
        except RuntimeError:  # the background loop is gone: shut down from here
            self.async_llm.shutdown()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _engine_args() -> set[str]:
    """What lm-eval's vLLM model and ``vllm.EngineArgs`` accept as model_args."""
    from vllm.engine.arg_utils import EngineArgs

    own = set(inspect.signature(VLLM.__init__).parameters) - {"self", "args", "kwargs"}
    return own | {f.name for f in dataclasses.fields(EngineArgs)}


def _data_parallel_size(value: Any) -> int:
    try:
        dp = int(value if value is not None else 1)
    except (TypeError, ValueError):
        dp = 0
    if dp < 1 or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"data_parallel_size must be an integer >= 1 (vLLM engine cores, "
                          f"one per GPU or GPU group), got {value!r}")
    return dp
