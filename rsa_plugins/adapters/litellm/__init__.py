"""LiteLLM adapter: ``rsa/<model>``, RSA as a LiteLLM custom provider.

``litellm.completion(model="rsa/openai/gpt-4o-mini", messages=..., rsa={"population": 8})`` runs
RSA on the chat over the inner model ``openai/gpt-4o-mini`` and returns one normal response
(`.provider`).  LiteLLM's proxy serves it from a ``model_list`` entry, so any OpenAI client gets
RSA (docs/litellm.md).

`register` adds the provider to ``litellm.custom_provider_map``; the start-up hook calls it right
after ``litellm`` is imported.  Importing this package imports neither LiteLLM nor the core; a
proxy config that sets its own ``custom_provider_map`` names
``rsa_plugins.adapters.litellm.handler``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROVIDER", "register", "handler", "RSAProvider"]

#: the provider name: models are ``rsa/<inner model>``
PROVIDER = "rsa"


def register(litellm_module: Any = None) -> None:
    """Add the ``rsa`` provider to LiteLLM (idempotent; never replaces a provider named ``rsa``
    that is already registered)."""
    if litellm_module is None:
        import litellm as litellm_module
    providers = litellm_module.custom_provider_map
    if any(item.get("provider") == PROVIDER for item in providers):
        return
    from .provider import handler

    providers.append({"provider": PROVIDER, "custom_handler": handler})


def __getattr__(name: str) -> Any:
    if name in ("handler", "RSAProvider"):
        from . import provider

        return getattr(provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
