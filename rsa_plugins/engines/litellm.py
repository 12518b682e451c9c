"""LiteLLM engine: any hosted or OpenAI-compatible model through `litellm.acompletion`.

One event loop, a semaphore per loop bounding the calls in flight, retries with exponential
backoff and jitter on 429 / 5xx / timeouts / connection errors (a server's Retry-After is
respected), LiteLLM's cache bypassed (identical calls must give different samples), usage from
`response.usage`, and `reasoning_content` kept apart from the answer text.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from typing import Any

from ..types import Completion, Request
from .base import Engine

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


#: providers whose servers speak the plain OpenAI chat-completions protocol at `api_base`
OPENAI_COMPATIBLE = {"hosted_vllm", "openai", "openai_like", "custom_openai", "lm_studio",
                     "llamafile", "sglang", "xinference"}


class EmptyCompletion(RuntimeError):
    """The server answered with neither content nor reasoning."""


class HTTPStatusError(RuntimeError):
    """A non-2xx answer on the direct HTTP transport."""

    def __init__(self, status_code: int, message: str, headers: Any = None) -> None:
        super().__init__(f"HTTP {status_code}: {message[:300]}")
        self.status_code = status_code
        self.litellm_response_headers = dict(headers or {})


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait, from a Retry-After header if present."""
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def _aiohttp_client_error() -> type[BaseException]:
    try:
        import aiohttp

        return aiohttp.ClientError
    except ImportError:  # pragma: no cover - aiohttp comes with litellm
        return ConnectionError


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, server errors, timeouts, dropped connections and empty answers are retried."""
    import litellm

    fatal = (litellm.BadRequestError, litellm.AuthenticationError, litellm.NotFoundError,
             litellm.PermissionDeniedError, litellm.ContextWindowExceededError)
    if isinstance(exc, fatal) and not isinstance(exc, litellm.RateLimitError):
        return False
    transient = (litellm.RateLimitError, litellm.InternalServerError, litellm.ServiceUnavailableError,
                 litellm.APIConnectionError, litellm.Timeout, EmptyCompletion, asyncio.TimeoutError,
                 ConnectionError, _aiohttp_client_error())
    if isinstance(exc, transient):
        return True
    status = _status(exc)
    if status is not None and status >= 400:
        return status in RETRYABLE_STATUS
    # malformed bodies and other unclassified API errors: worth another try
    return isinstance(exc, (litellm.APIError, ValueError))


class LiteLLMEngine(Engine):
    """Generations from a LiteLLM model string (``openai/gpt-4o-mini``, ``hosted_vllm/NAME``, ...).

    `router` may be a `litellm.Router`; `model` is then one of its model group names.
    `use_n` asks for several samples in one request at the first step (default: when LiteLLM
    says the provider accepts `n`).

    `transport`: ``"litellm"`` sends every call through `litellm.acompletion`; ``"http"`` posts
    straight to an OpenAI-compatible ``api_base`` (LiteLLM still resolves provider, base and
    key).  ``"auto"`` (default) picks ``"http"`` for OpenAI-compatible providers with an
    ``api_base`` when no LiteLLM callbacks are registered: LiteLLM costs several milliseconds of
    CPU per call, which bounds throughput at high concurrency.
    """

    name = "litellm"

    def __init__(self, model: str, api_base: str | None = None, api_key: str | None = None, *,
                 concurrency: int = 64, timeout: float = 600.0, max_retries: int = 6,
                 backoff: float = 0.5, max_backoff: float = 30.0, use_n: bool | None = None,
                 router: Any = None, max_model_len: int | None = None,
                 transport: str = "auto", **completion_kwargs: Any) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must be a LiteLLM model string such as 'openai/gpt-4o-mini'")
        if router is None and "/" not in model:
            try:
                litellm.get_llm_provider(model)
            except Exception:
                raise ValueError(
                    f"model {model!r} names no LiteLLM provider; use 'provider/model', e.g. "
                    "'openai/gpt-4o-mini' or 'hosted_vllm/NAME' with api_base"
                ) from None
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
        self._sessions: dict[int, Any] = {}
        self._http = self._resolve_transport(transport)
        self._tokenize: bool | None = None  # whether the server has vLLM's /tokenize

    def _resolve_transport(self, transport: str) -> tuple[str, str, str | None] | None:
        """(url, served model name, key) for the direct transport, or None for LiteLLM."""
        import litellm

        if transport not in ("auto", "http", "litellm"):
            raise ValueError(f"transport must be one of auto, http, litellm; got {transport!r}")
        if transport == "litellm" or self.router is not None:
            return None
        try:
            name, provider, key, base = litellm.get_llm_provider(self.model, api_base=self.api_base)
        except Exception:  # noqa: BLE001
            provider, base = "", None
        usable = provider in OPENAI_COMPATIBLE and bool(base)
        if transport == "http" and not usable:
            raise ValueError("transport='http' needs an OpenAI-compatible model with api_base")
        hooks = any(getattr(litellm, a, None) for a in (
            "callbacks", "success_callback", "failure_callback", "_async_success_callback",
            "input_callback"))
        if not usable or (transport == "auto" and hooks):
            return None
        return f"{base.rstrip('/')}/chat/completions", name, self._api_key or key

    def _provider_accepts_n(self) -> bool:
        import litellm

        try:
            _, provider, _, _ = litellm.get_llm_provider(self.model, api_base=self.api_base)
            params = litellm.get_supported_openai_params(model=self.model, custom_llm_provider=provider)
            return bool(params) and "n" in params
        except Exception:
            return False

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "model": self.model, "api_base": self.api_base,
                "transport": "litellm" if self._http is None else "http"}

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
        if req.stop:  # OpenAI-style APIs take at most 4 stop strings
            kwargs["stop"] = list(req.stop[:4])
        if req.prefill is not None and self.model.startswith("hosted_vllm/"):
            # vLLM's chat API continues the assistant prefill instead of starting a new turn
            kwargs["extra_body"] = {**(kwargs.get("extra_body") or {}),
                                    "continue_final_message": True, "add_generation_prompt": False}
        if n > 1:
            kwargs["n"] = n
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
                async with self._semaphore():
                    response = await self._complete(kwargs)
                comps = self._parse(response, n)
                comps[0].retries = attempt  # retries are per request, not per choice
                return comps
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                if attempt >= self.max_retries or not is_retryable(exc):
                    error = redact(_describe(exc), self._api_key)
                    return [Completion(error=error, retries=attempt) for _ in range(n)]
                wait = _retry_after(exc)
                if wait is None:
                    wait = min(self.max_backoff, self.backoff * 2 ** attempt)
                    wait = wait / 2 + random.uniform(0, wait / 2)  # jitter
                attempt += 1
                await asyncio.sleep(wait)

    async def _complete(self, kwargs: dict[str, Any]) -> Any:
        if self._http is not None:
            return await self._post(kwargs)
        if self.router is not None:
            return await self.router.acompletion(model=self.model, **kwargs)
        import litellm

        return await litellm.acompletion(model=self.model, **kwargs)

    def _session(self) -> Any:
        import aiohttp

        loop_id = id(asyncio.get_running_loop())
        session = self._sessions.get(loop_id)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._sessions[loop_id] = session
        return session

    def _server_root(self) -> str:
        url = self._http[0].removesuffix("/chat/completions")  # type: ignore[index]
        return url.removesuffix("/v1")

    async def prepare(self) -> None:
        """On the direct transport, learn the context length from the server when it says it
        (vLLM's ``/v1/models`` does), so aggregation prompts are fitted and never rejected."""
        if self._http is None or self.max_model_len is not None:
            return
        url, name, key = self._http
        try:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            async with self._session().get(url.removesuffix("/chat/completions") + "/models",
                                           headers=headers, timeout=10) as resp:
                models = (await resp.json()).get("data", []) if resp.status == 200 else []
        except Exception:  # noqa: BLE001 - an unreachable server shows up on the first call
            return
        for m in models:
            if m.get("id") == name and isinstance(m.get("max_model_len"), int):
                self.max_model_len = m["max_model_len"]

    async def prompt_tokens(self, request: Request) -> int:
        """Exact counts from the server's ``/tokenize`` (vLLM) when it has one, else estimated."""
        if self._http is not None and self._tokenize is not False:
            url, name, key = self._http
            prefill = request.prefill is not None
            body = {"model": name, "messages": request.messages,
                    "add_generation_prompt": not prefill, "continue_final_message": prefill}
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            try:
                async with self._semaphore():
                    async with self._session().post(self._server_root() + "/tokenize", json=body,
                                                    headers=headers) as resp:
                        if resp.status == 200:
                            self._tokenize = True
                            return int((await resp.json())["count"])
                        if resp.status in (404, 405):
                            self._tokenize = False
            except Exception:  # noqa: BLE001 - fall back to the estimate
                pass
        return await super().prompt_tokens(request)

    async def _post(self, kwargs: dict[str, Any]) -> Any:
        """One chat completion over the direct transport; returns the decoded JSON body."""
        url, name, key = self._http  # type: ignore[misc]
        body = {k: v for k, v in kwargs.items()
                if k not in ("timeout", "caching", "num_retries", "api_base", "api_key")}
        body["model"] = name
        body.update(body.pop("extra_body", None) or {})
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self._session().post(url, json=body, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise HTTPStatusError(resp.status, text, resp.headers)
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EmptyCompletion(f"malformed response body: {exc}") from None
        if not isinstance(body, dict):
            raise EmptyCompletion("malformed response body: not a JSON object")
        return body

    @staticmethod
    def _parse(response: Any, n: int) -> list[Completion]:
        """Completions from a LiteLLM response object or a decoded chat-completions body."""
        choices = list(_field(response, "choices") or [])
        if not choices:
            raise EmptyCompletion("response has no choices")
        usage = _field(response, "usage")
        prompt = int(_field(usage, "prompt_tokens") or 0)
        completion = int(_field(usage, "completion_tokens") or 0)
        out = []
        for i, ch in enumerate(choices):
            msg = _field(ch, "message")
            content = _field(msg, "content")
            text = content if isinstance(content, str) else ""
            reasoning = _field(msg, "reasoning_content") or _field(msg, "reasoning") or None
            if not text.strip() and not reasoning:
                raise EmptyCompletion("the model returned an empty completion")
            share = completion // len(choices) + (1 if i < completion % len(choices) else 0)
            out.append(Completion(text=text, reasoning=reasoning,
                                  prompt_tokens=prompt if i == 0 else 0, completion_tokens=share,
                                  finish_reason=_field(ch, "finish_reason")))
        return out

    async def aclose(self) -> None:
        """Close this engine's own HTTP sessions (LiteLLM's shared clients: `rsa_plugins.aclose`)."""
        for session in self._sessions.values():
            if not session.closed:
                await session.close()
        self._sessions.clear()


def _field(obj: Any, name: str) -> Any:
    """`obj[name]` for dicts, `obj.name` for objects, None when absent."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every given secret (and any API key in the environment) masked."""
    keys = [s for s in secrets if s] + [v for k, v in os.environ.items()
                                        if k.endswith(("_API_KEY", "_TOKEN")) and len(v) >= 8]
    for key in keys:
        text = text.replace(key, "***")
    return text


def _describe(exc: BaseException) -> str:
    """One line naming the error class and status, without request bodies or keys."""
    status = _status(exc)
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}{f' ({status})' if status else ''}: {text}"
