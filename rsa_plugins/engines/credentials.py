"""Errors that every call would repeat: caught before the first call or at the first answer.

A provider without its API key in the environment fails when the engine is built
(:class:`MissingCredentials`, naming the variable to set).  A 401, 403 or 404 answer means every
other call would get the same: the LiteLLM engine raises :class:`FatalAPIError` at once instead
of retrying, and later calls raise it again without sending anything.
"""

from __future__ import annotations

import os
from collections.abc import Collection

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
