"""Inspect AI entry point (group ``inspect_ai``, name ``rsa_plugins``).

Inspect imports this module when it loads plugins, which registers ``rsa_plugins/rsa`` and
``rsa_plugins/answer_match``.  It also adds the bare alias ``rsa`` so that
``inspect eval TASK --solver rsa`` works; the alias is never registered over an existing
``rsa`` (a built-in, another package's alias, or a local solver).
"""

from __future__ import annotations

import logging

from ._compat import add_solver_alias
from .scorer import answer_match
from .solver import rsa

__all__ = ["answer_match", "rsa", "register_alias"]

logger = logging.getLogger(__name__)

ALIAS = "rsa"


def register_alias(name: str = ALIAS) -> bool:
    """Register `name` as a bare solver alias of ``rsa_plugins/rsa``; False if taken or unsupported."""
    try:
        return add_solver_alias(rsa, name)
    except Exception as exc:  # noqa: BLE001 - a convenience alias must never break Inspect
        logger.debug("rsa_plugins: could not register the solver alias %r: %s", name, exc)
        return False


register_alias()
