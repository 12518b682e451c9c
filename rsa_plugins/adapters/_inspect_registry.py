"""Inspect AI entry point (group ``inspect_ai``, name ``rsa_plugins``).

Inspect imports this module when it loads plugins, which registers ``rsa_plugins/rsa`` and
``rsa_plugins/answer_match``.  It also adds the bare alias ``rsa`` so that
``inspect eval TASK --solver rsa`` works; the alias is never registered over an existing
``rsa`` (a built-in, another package's alias, or a local solver).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from .inspect_ai import answer_match, rsa

__all__ = ["answer_match", "rsa", "register_alias"]

logger = logging.getLogger(__name__)

ALIAS = "rsa"


def register_alias(name: str = ALIAS) -> bool:
    """Register `name` as a bare solver alias of ``rsa_plugins/rsa``; False if taken or unsupported.

    Uses Inspect's private registry functions (checked on inspect-ai 0.3.285), so any failure
    leaves only the canonical ``rsa_plugins/rsa``.
    """
    try:
        from inspect_ai._util.registry import (
            RegistryInfo,
            registry_add,
            registry_has,
            registry_info,
            set_registry_info,
        )
    except ImportError:
        return False
    try:
        if registry_has("solver", name):
            return False

        @functools.wraps(rsa)
        def alias(*args: Any, **kwargs: Any) -> Any:
            return rsa(*args, **kwargs)

        registry_add(alias, RegistryInfo(type="solver", name=name))
        # logs and plans still record the canonical name rsa_plugins/rsa
        set_registry_info(alias, registry_info(rsa))
        return True
    except Exception as exc:  # noqa: BLE001 - a convenience alias must never break Inspect
        logger.debug("rsa_plugins: could not register the solver alias %r: %s", name, exc)
        return False


register_alias()
