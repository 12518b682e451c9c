"""DSPy adapter: ``dspy.RSA``, Recursive Self-Aggregation as a ``dspy.Module`` (`.module`), and
the engine that makes its generations calls of the module's predictors (`.engine`).

`install` exposes the module as ``dspy.RSA``; the start-up hook calls it right after ``dspy``
is imported.  Importing this package does not import dspy; its names load on first use.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["RSA", "RSAPrediction", "DSPyEngine", "install", "vote_key"]


def install(dspy_module: Any = None) -> None:
    """Expose `RSA` as ``dspy.RSA`` (never replacing an ``RSA`` that DSPy itself defines).

    Called by the start-up hook right after ``dspy`` is imported; safe to call again.
    """
    module = sys.modules.get(f"{__name__}.module")
    if module is not None and not hasattr(module, "RSA"):
        return  # .module is importing dspy, which ran this hook: its last lines install
    from .module import RSA

    if dspy_module is None:
        import dspy as dspy_module
    if getattr(dspy_module, "RSA", None) is None:
        dspy_module.RSA = RSA


def __getattr__(name: str) -> Any:
    if name in ("RSA", "RSAPrediction", "vote_key"):
        from . import module

        return getattr(module, name)
    if name == "DSPyEngine":
        from .engine import DSPyEngine

        return DSPyEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
