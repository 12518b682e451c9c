"""LiteLLM engine: any hosted or OpenAI-compatible model through `litellm.acompletion`.

One event loop, a semaphore per loop bounding the calls in flight, retries with exponential
backoff and jitter on 429 / 5xx / timeouts / connection errors (a server's Retry-After is
respected), LiteLLM's cache bypassed (identical calls must give different samples), usage from
`response.usage`, and `reasoning_content` kept apart from the answer text.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from typing import Any

from ..types import Completion, Request
from .base import Engine
from .errors import (
    REASONS,
    FatalAPIError,
    _retry_after,
    status_of,
    describe_error,
    check_model,
    fatal_reason,
    is_retryable,
    redact,
)
from .http import OpenAIServer, parse_choices
from .providers import OPENAI_COMPATIBLE, model_prices, stop_cap, user_callbacks
from .router import RouterTransport

#: request fields passed on as they are that LiteLLM does not name but OpenAI-compatible servers
#: (vLLM, SGLang) take; LiteLLM's own `completion` arguments pass through too
EXTRA_FIELDS = ("top_k", "min_p", "repetition_penalty", "extra_body", "chat_template_kwargs")
class LiteLLMEngine(Engine):
    """Generations from a LiteLLM model string (``openai/gpt-4o-mini``, ``hosted_vllm/NAME``, ...).

    `router` may be a `litellm.Router`; `model` is then one of its model group names.
    `use_n` asks for several samples in one request at the first step (default: when LiteLLM
    says the provider accepts `n`).

    `transport`: ``"litellm"`` sends every call through `litellm.acompletion` (or
    `Router.acompletion`); ``"http"`` posts straight to an OpenAI-compatible ``api_base``
    (LiteLLM still resolves provider, base and key), and with a `router` straight to the
    deployment the Router lets serve (`rsa_plugins.engines.router`: its cooldowns kept, a
    problem's requests on one deployment).  ``"auto"`` (default) picks ``"http"`` where it
    can (OpenAI-compatible servers with an ``api_base``) unless callbacks of your own are
    registered with LiteLLM (the Router's routing handlers do not count): LiteLLM costs
    several milliseconds of CPU per call, which bounds throughput at high concurrency.

    `session_header`: an HTTP header that carries each request's problem key, for a router in
    front of several servers that keeps a session on one replica, where the problem's shared
    prompt prefix is cached: ``"x-session-id"`` for vLLM's ``vllm-router --policy
    consistent_hash`` and for the production-stack router with ``--routing-logic session
    --session-key x-session-id``.  Prefix-aware routers need nothing.
    """

    name = "litellm"

    def __init__(self, model: str, api_base: str | None = None, api_key: str | None = None, *,
                 concurrency: int = 64, timeout: float = 600.0, max_retries: int = 6,
                 backoff: float = 0.5, max_backoff: float = 30.0, use_n: bool | None = None,
                 router: Any = None, max_model_len: int | None = None,
                 transport: str = "auto", session_header: str | None = None,
                 **completion_kwargs: Any) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must be a LiteLLM model string such as 'openai/gpt-4o-mini'")
        # a provider that LiteLLM does not know, or a missing API key, fails here in one line
        self._keys = [] if router is not None else check_model(model, api_base, api_key,
                                                                 OPENAI_COMPATIBLE)
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.model, self.api_base, self._api_key = model, api_base, api_key
        self.router = router
        self.concurrency, self.timeout = concurrency, timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.max_model_len = max_model_len
        self.kwargs = completion_kwargs
        if use_n is None:
            use_n = router is None and self._provider_accepts_n()
        self.supports_n = use_n
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        if session_header is not None and (not isinstance(session_header, str)
                                           or not session_header.strip()):
            raise ValueError(f"session_header must be an HTTP header name such as "
                             f"'x-session-id', got {session_header!r}")
        self.session_header = session_header
        self._http = self._resolve_transport(transport)
        bases = [self._http.base] if isinstance(self._http, OpenAIServer) else \
            [srv.base for srv in self._http.servers.values()] if self._http is not None else []
        self.max_stop = stop_cap(self._http is None, bases)
        self._fatal: FatalAPIError | None = None  # set by a 401/403/404: every call would fail

    def _resolve_transport(self, transport: str) -> OpenAIServer | RouterTransport | None:
        """The direct transport (one server, or a Router's deployments), None for LiteLLM."""
        import litellm

        if transport not in ("auto", "http", "litellm"):
            raise ValueError(f"transport must be one of auto, http, litellm; got {transport!r}")
        if transport == "litellm" or (transport == "auto" and user_callbacks()):
            return None
        if self.router is not None:
            direct = RouterTransport.create(self.router, self.model, self.timeout,
                                            OPENAI_COMPATIBLE)
            if direct is None and transport == "http":
                raise ValueError("transport='http' with a router needs a LiteLLM Router with "
                                 "select() and health() and a model group of OpenAI-compatible "
                                 "deployments with api_base")
            return direct
        try:
            name, provider, key, base = litellm.get_llm_provider(self.model, api_base=self.api_base)
        except Exception:  # noqa: BLE001
            provider, base = "", None
        usable = provider in OPENAI_COMPATIBLE and bool(base)
        if transport == "http" and not usable:
            raise ValueError("transport='http' needs an OpenAI-compatible model with api_base")
        if not usable:
            return None
        return OpenAIServer(base, name, self._api_key or key, self.timeout)

    def openai_server(self) -> tuple[str, str, str | None] | None:
        """(base URL, served model name, API key) of the OpenAI-compatible server this engine
        calls, or None for other providers (hosted APIs LiteLLM translates, a Router)."""
        import litellm

        if self.router is not None:
            return None
        try:
            name, provider, key, base = litellm.get_llm_provider(self.model, api_base=self.api_base)
        except Exception:  # noqa: BLE001
            return None
        if provider not in OPENAI_COMPATIBLE or not base:
            return None
        return str(base).rstrip("/"), name, self._api_key or key

    def _provider_accepts_n(self) -> bool:
        import litellm

        try:
            _, provider, _, _ = litellm.get_llm_provider(self.model, api_base=self.api_base)
            params = litellm.get_supported_openai_params(model=self.model, custom_llm_provider=provider)
            return bool(params) and "n" in params
        except Exception:
            return False

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars from LiteLLM's cost map (None: the model has no price there)."""
        if "_prices" not in self.__dict__:
            self._prices = None if self.router is not None else model_prices(self.model)
        if self._prices is None:
            return None
        return prompt_tokens * self._prices[0] + completion_tokens * self._prices[1]

    def describe(self) -> dict[str, object]:
        transport = ("litellm" if self._http is None else
                     "router-http" if isinstance(self._http, RouterTransport) else "http")
        return {"engine": self.name, "model": self.model, "api_base": self.api_base,
                "transport": transport, "max_stop": self.max_stop}

    def stats(self) -> dict[str, Any]:
        """With a Router on the direct transport: requests per deployment, failures reported."""
        return self._http.stats() if isinstance(self._http, RouterTransport) else {}

    def _semaphore(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in self._semaphores:
            self._semaphores[loop_id] = asyncio.Semaphore(self.concurrency)
        return self._semaphores[loop_id]

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        if len(requests) == 1:  # the barrier-free loop's usual call: no extra task
            return [await self._request(requests[0])]
        return list(await asyncio.gather(*(self._request(r) for r in requests)))

    async def _request(self, req: Request) -> list[Completion]:
        if req.n > 1 and not self.supports_n:
            singles = [self._call(req, 1, req.seed + i) for i in range(req.n)]
            return [c[0] for c in await asyncio.gather(*singles)]
        got = await self._call(req, req.n, req.seed)
        missing = req.n - len(got)
        if missing > 0:  # some providers quietly cap n: top up with single calls
            extra = await asyncio.gather(
                *(self._call(req, 1, req.seed + 7919 * (i + 1)) for i in range(missing)))
            got += [c[0] for c in extra]
        return got[: req.n]

    async def _call(self, req: Request, n: int, seed: int) -> list[Completion]:
        kwargs: dict[str, Any] = dict(self.kwargs)
        kwargs.update(req.extra)
        kwargs.update(messages=req.messages, temperature=req.temperature, seed=seed,
                      timeout=self.timeout, caching=False, num_retries=0)
        if req.stop:  # every one, but where the provider takes fewer (`max_stop`)
            kwargs["stop"] = self.stop_sent(req.stop)
        if req.prefill is not None and self.model.startswith("hosted_vllm/"):
            # vLLM's chat API continues the assistant prefill instead of starting a new turn
            kwargs["extra_body"] = {**(kwargs.get("extra_body") or {}),
                                    "continue_final_message": True, "add_generation_prompt": False}
        if n > 1:
            kwargs["n"] = n
        if self.session_header and req.cache_key:  # a router keeps a problem on one replica
            kwargs["extra_headers"] = {**(kwargs.get("extra_headers") or {}),
                                       self.session_header: req.cache_key}
        if req.max_tokens is not None:
            kwargs["max_tokens"] = req.max_tokens
        if req.top_p is not None:
            kwargs["top_p"] = req.top_p
        if self.router is None:
            if self.api_base:
                kwargs["api_base"] = self.api_base
            if self._api_key:
                kwargs["api_key"] = self._api_key
        attempt = 0
        while True:
            try:
                if self._fatal is not None:
                    raise self._fatal
                async with self._semaphore():
                    response = await self._complete(kwargs, req.cache_key)
                comps = parse_choices(response, n)
                comps[0].retries = attempt  # retries are per request, not per choice
                return comps
            except (asyncio.CancelledError, FatalAPIError):
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                reason = fatal_reason(exc, status_of(exc))
                if reason is not None:
                    self._fatal = self._fatal or FatalAPIError(self._explain(reason, exc))
                    raise self._fatal from None
                if attempt >= self.max_retries or not is_retryable(exc):
                    error = redact(describe_error(exc), self._api_key)
                    return [Completion(error=error, retries=attempt) for _ in range(n)]
                wait = _retry_after(exc)
                if wait is None:
                    wait = min(self.max_backoff, self.backoff * 2 ** attempt)
                    wait = wait / 2 + random.uniform(0, wait / 2)  # jitter
                attempt += 1
                await asyncio.sleep(wait)

    def _explain(self, reason: str, exc: BaseException) -> str:
        """One line: the model, what went wrong, the provider's words, what to check."""
        where = "the api_key given" if self._api_key else " or ".join(self._keys) or "its API key"
        fix = {"credentials": f"check {where}", "access": f"check that {where} may use it",
               "model": "check the model name" + (" and the api_base" if self.api_base else "")}
        said = redact(describe_error(exc), self._api_key)[:200]
        return f"model {self.model}: {REASONS[reason]} ({said}); {fix[reason]}"

    async def _complete(self, kwargs: dict[str, Any], key: str | None = None) -> Any:
        if isinstance(self._http, RouterTransport):
            return await self._http.complete(kwargs, key)
        if self._http is not None:
            return await self._http.complete(kwargs)
        if self.router is not None:
            return await self.router.acompletion(model=self.model, **kwargs)
        import litellm

        return await litellm.acompletion(model=self.model, **kwargs)

    async def prepare(self) -> None:
        """On the direct transport, learn the context length from the server when it says it
        (vLLM's ``/v1/models`` does), so aggregation prompts are fitted and never rejected."""
        if self._http is not None and self.max_model_len is None:
            self.max_model_len = await self._http.context_length()

    async def prompt_tokens(self, request: Request) -> int:
        """Exact counts from the server's ``/tokenize`` (vLLM) when it has one, else estimated."""
        if self._http is not None:
            async with self._semaphore():
                count = await self._http.count(request)
            if count is not None:
                return count
        return await super().prompt_tokens(request)

    async def aclose(self) -> None:
        """Close this engine's own HTTP sessions (LiteLLM's shared clients: `rsa_plugins.aclose`)."""
        if self._http is not None:
            await self._http.aclose()


def option_names() -> set[str]:
    """Every keyword `LiteLLMEngine` accepts: its own, LiteLLM's `completion` arguments and
    `EXTRA_FIELDS` (the documented pass-through request fields)."""
    import inspect

    import litellm

    own = set(inspect.signature(LiteLLMEngine.__init__).parameters)
    passed = set(inspect.signature(litellm.completion).parameters)
    return (own | passed | set(EXTRA_FIELDS)) - {"self", "completion_kwargs", "kwargs", "model",
                                                  "messages"}
