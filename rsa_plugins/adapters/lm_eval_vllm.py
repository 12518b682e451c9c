"""``rsa-vllm``: lm-eval's ``vllm`` model with RSA in place of plain sampling.

Kept apart from `rsa_plugins.adapters.lm_eval` because lm-eval's vLLM module imports vllm at
import time; the registry imports this module only when ``--model rsa-vllm`` is used.
"""

from __future__ import annotations

from typing import Any

from lm_eval.models.vllm_causallms import VLLM

from ..config import ConfigError, RSAConfig
from ..engines.base import Engine
from ..engines.vllm import VLLMEngine
from ..types import Request
from .lm_eval import RSAGenerateMixin, RSAOptions


class RSAVLLM(RSAGenerateMixin, VLLM):
    """lm-eval's vLLM model; `generate_until` runs RSA, everything else is inherited.

    model_args: the RSA parameters (``population``, ``aggregation_size``, ``steps``,
    ``selection``, ``seed``, ``temperature``, ``top_p``, ``max_tokens``, ``view``,
    ``tail_tokens``, ``include_reasoning``, ``kind``, ``template``, ``sampling``; also with an
    ``rsa_`` prefix), ``trace`` (JSONL trajectory, resumed when it exists) and ``resume``.
    Every other argument goes to lm-eval's ``vllm`` model and from there to ``vllm.LLM``.
    ``seed`` seeds both RSA and the engine.  Each RSA step is one ``LLM.generate`` over every
    request's population.  ``data_parallel_size > 1`` is refused (lm-eval would reload the
    model on every call); use ``tensor_parallel_size``.
    """

    def __init__(self, pretrained: str, **kwargs: Any) -> None:
        options = RSAOptions.pop_from(kwargs)
        dp = kwargs.get("data_parallel_size", 1)
        if dp is not None and int(dp) > 1:
            raise ConfigError(
                f"data_parallel_size={int(dp)} is not supported by rsa-vllm: lm-eval's data-"
                "parallel path builds a new vLLM engine on every generate call, and RSA makes "
                "one call per step. Use tensor_parallel_size=N to spread the model over N GPUs, "
                "or run one lm_eval per GPU on separate task shards.")
        if "seed" in options.explicit:
            kwargs["seed"] = options.config.seed
        kwargs.pop("device", None)  # the CLI always sends one; vLLM picks devices itself
        super().__init__(pretrained=pretrained, **kwargs)
        self._init_rsa(options)
        self._engine: VLLMEngine | None = None

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        """lm-eval's rendering; the messages are remembered to re-render aggregation turns."""
        rendered = super().apply_chat_template(chat_history, add_generation_prompt)
        return self._remember_chat(rendered, chat_history)

    # ------------------------------------------------------------ RSA hooks

    def _rsa_prepare(self, config: RSAConfig, until: list[str]) -> tuple[Engine, RSAConfig]:
        if self._engine is None:
            self._engine = VLLMEngine(
                self.model, tokenizer=self.tokenizer, max_model_len=self.max_length,
                think_end_token=self.think_end_token, render=self._render,
                encode=self.tok_encode, lora_request=self.lora_request)
        self._engine.stop = list(until)
        # lm-eval's own defaults for its vLLM model: keep special tokens in the text
        sampling = {"skip_special_tokens": False, "spaces_between_special_tokens": False,
                    **config.sampling}
        return self._engine, config.replace(sampling=sampling)

    def _render(self, req: Request) -> str:
        """lm-eval's own prompt for first samples; aggregation turns rendered the same way."""
        meta = req.problem.metadata if req.problem is not None else {}
        if req.step == 1 and "lm_eval_context" in meta:
            return meta["lm_eval_context"]
        if meta.get("chat"):
            system = [m for m in req.messages if m["role"] == "system"]
            rest = [m for m in req.messages if m["role"] != "system"]
            return VLLM.apply_chat_template(self, [*system, *meta.get("prefix", []), *rest])
        return "\n\n".join(m["content"] for m in req.messages)
