"""`RSAProvider`: the LiteLLM custom provider behind ``rsa/<model>``.

LiteLLM calls `acompletion` / `astreaming` (and their synchronous twins) with the inner model
(``rsa/`` stripped), the chat, the call's parameters (``rsa`` among them) and, on the proxy, the
model entry's `litellm_params`.  The request becomes a plan (`.request`), the plan a run of the
core loop (`.run`), the result LiteLLM's response (`.response`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from litellm.llms.custom_llm import CustomLLM

from ..._background import run_sync
from ...validate import ConfigError
from .request import Plan, plan
from . import response as rsp
from .run import Progress, error, execute, stream


class RSAProvider(CustomLLM):
    """Recursive Self-Aggregation over any LiteLLM model: ``rsa/<inner model>``."""

    async def acompletion(self, model: str, messages: list, api_base: str | None,
                          custom_prompt_dict: dict, model_response: Any, print_verbose: Any,
                          encoding: Any, api_key: str | None, logging_obj: Any,
                          optional_params: dict, acompletion: Any = None,
                          litellm_params: dict | None = None, logger_fn: Any = None,
                          headers: dict | None = None, timeout: Any = None,
                          client: Any = None) -> Any:
        p = _plan(model, messages, optional_params, litellm_params, api_base, api_key, timeout)
        if p.passthrough is not None:
            import litellm

            response = await litellm.acompletion(**_passthrough_args(p, messages))
            return rsp.mark_passthrough(response, p.passthrough)
        progress = Progress(p.config.generations_per_problem)
        result = await execute(p, progress)
        return rsp.model_response(model_response, p.inner, result, p.config, p.n,
                                  result.usage.reasoning_tokens)

    async def astreaming(self, model: str, messages: list, api_base: str | None,
                         custom_prompt_dict: dict, model_response: Any, print_verbose: Any,
                         encoding: Any, api_key: str | None, logging_obj: Any,
                         optional_params: dict, acompletion: Any = None,
                         litellm_params: dict | None = None, logger_fn: Any = None,
                         headers: dict | None = None, timeout: Any = None,
                         client: Any = None) -> AsyncIterator[Any]:
        p = _plan(model, messages, optional_params, litellm_params, api_base, api_key, timeout)
        if p.passthrough is not None:
            async for piece in _passthrough_stream(p, messages):
                yield piece
            return
        async for piece in stream(p):
            yield piece

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        return run_sync(self.acompletion(*args, **kwargs))

    def streaming(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """`astreaming` driven from synchronous code (on rsa-plugins' background loop)."""
        agen = self.astreaming(*args, **kwargs)

        async def next_piece() -> Any:
            return await agen.__anext__()

        try:
            while True:
                try:
                    piece = run_sync(next_piece())
                except StopAsyncIteration:
                    return
                yield piece
        finally:
            run_sync(agen.aclose())


def _plan(model: str, messages: list, optional_params: dict, litellm_params: dict | None,
          api_base: str | None, api_key: str | None, timeout: Any) -> Plan:
    try:
        return plan(model, messages, optional_params, litellm_params, api_base, api_key, timeout)
    except (ConfigError, ValueError, TypeError) as exc:
        raise error(exc, model) from None


def _passthrough_args(p: Plan, messages: list, stream: bool = False) -> dict[str, Any]:
    """The request as it came, for the inner model (without RSA's own settings)."""
    args = {k: v for k, v in p.params.items() if k not in ("rsa", "stream", "max_retries")}
    base = p.options
    args.update(model=p.inner, messages=messages, timeout=base["timeout"], stream=stream)
    for key in ("api_base", "api_key"):
        if base.get(key):
            args[key] = base[key]
    return args


async def _passthrough_stream(p: Plan, messages: list) -> AsyncIterator[Any]:
    import litellm

    response = await litellm.acompletion(**_passthrough_args(p, messages, stream=True))
    first = True
    async for piece in response:
        if first and getattr(piece, "choices", None):
            delta = piece.choices[0].delta
            mark = {"applied": False, "reason": p.passthrough}
            delta.provider_specific_fields = {**(delta.provider_specific_fields or {}),
                                              rsp.FIELD: mark}
            first = False
        yield piece


#: the instance LiteLLM's ``custom_provider_map`` holds
handler = RSAProvider()
