"""What can go wrong with a call, and what to do about it.

Transient failures (rate limits, server errors, timeouts, dropped connections, empty or
malformed answers) are retried (`is_retryable`, honouring a server's Retry-After).  Errors that
every call would repeat are caught before the first call or at the first answer:

A provider without its API key in the environment fails when the engine is built
(:class:`MissingCredentials`, naming the variable to set).  A 401, 403 or 404 answer means every
other call would get the same: the LiteLLM engine raises :class:`FatalAPIError` at once instead
of retrying, and later calls raise it again without sending anything.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection
from typing import Any

from .base import EngineError


class MissingCredentials(EngineError, ValueError):
    """The provider needs an API key that is neither in the environment nor given (raised
    when the engine is built; a ValueError too, like the engine's other bad arguments)."""


class FatalAPIError(EngineError):
    """Every call would fail the same way (key refused, no access, unknown model): raised at
    the first such answer, never retried, and raised again by later calls without sending."""


REASONS = {"credentials": "the provider refused the credentials",
           "access": "the provider denied access", "model": "no such model"}


def fatal_reason(exc: BaseException, status: int | None) -> str | None:
    """``credentials`` (401, a missing key), ``access`` (403), ``model`` (404), else None;
    `status` is the HTTP status of the failed call, if any."""
    import litellm

    if isinstance(exc, litellm.AuthenticationError) or status == 401 or \
            "Missing credentials" in str(exc):
        return "credentials"
    if isinstance(exc, litellm.PermissionDeniedError) or status == 403:
        return "access"
    if isinstance(exc, litellm.NotFoundError) or status == 404:
        return "model"
    return None


def check_model(model: str, api_base: str | None, api_key: str | None,
                keyless: Collection[str] = ()) -> list[str]:
    """Fail now, in one line, on a model naming no provider or missing its API key; return
    the environment variables that hold the provider's key (for later error messages).

    `keyless`: providers that need no key when an api_base is given (local servers).
    """
    import litellm

    try:
        _, provider, _, _ = litellm.get_llm_provider(model, api_base=api_base)
    except Exception:  # noqa: BLE001 - LiteLLM raises several types here
        raise ValueError(f"model {model!r} names no LiteLLM provider; use 'provider/model', e.g. "
                         "'openai/gpt-4o-mini' or 'hosted_vllm/NAME' with api_base") from None
    try:
        missing = list(litellm.validate_environment(model=model, api_base=api_base)
                       .get("missing_keys") or [])
    except Exception:  # noqa: BLE001 - an unknown provider layout: the first call will tell
        missing = []
    keys = [k for k in missing if k.endswith(("_API_KEY", "_TOKEN"))]
    local = bool(api_base) and provider in keyless
    if keys and len(keys) == len(missing) and not api_key and not local:
        raise MissingCredentials(f"model {model} needs an API key: set {' or '.join(keys)} "
                                 f"(export {keys[0]}=...) or pass api_key=...")
    if keys:
        return keys
    wanted = provider.upper().replace("_", "")
    return [k for k in os.environ if k.endswith("_API_KEY")
            and k.removesuffix("_API_KEY").replace("_", "") == wanted]


# ---------------------------------------------------------------------------- transient

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


class EmptyCompletion(RuntimeError):
    """The server answered with neither content nor reasoning."""


class HTTPStatusError(RuntimeError):
    """A non-2xx answer on the direct HTTP transport."""

    def __init__(self, status_code: int, message: str, headers: Any = None) -> None:
        super().__init__(f"HTTP {status_code}: {message[:300]}")
        self.status_code = status_code
        self.litellm_response_headers = dict(headers or {})


def status_of(exc: BaseException) -> int | None:
    """The HTTP status a failed call carries, if any."""
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
    status = status_of(exc)
    if status is not None and status >= 400:
        return status in RETRYABLE_STATUS
    # malformed bodies and other unclassified API errors: worth another try
    return isinstance(exc, (litellm.APIError, ValueError))


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every given secret (and any API key in the environment) masked."""
    keys = [s for s in secrets if s] + [v for k, v in os.environ.items()
                                        if k.endswith(("_API_KEY", "_TOKEN")) and len(v) >= 8]
    for key in keys:
        text = text.replace(key, "***")
    return text


def describe_error(exc: BaseException) -> str:
    """One line naming the error class and status, without request bodies or keys."""
    status = status_of(exc)
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}{f' ({status})' if status else ''}: {text}"
