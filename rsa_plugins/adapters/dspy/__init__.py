"""DSPy adapter: ``dspy.RSA``, Recursive Self-Aggregation as a ``dspy.Module`` (`.module`), and
the engine that makes its generations calls of the module's predictors (`.engine`).

`install` exposes the module as ``dspy.RSA``; the start-up hook calls it right after ``dspy``
is imported.  Importing this package does not import dspy; its names load on first use, and
``dspy.RSA`` loads `.module` on first use (so installing never imports it while dspy itself is
still being imported).
"""

from __future__ import annotations

from typing import Any

__all__ = ["RSA", "RSAPrediction", "DSPyEngine", "install", "vote_key"]


def install(dspy_module: Any = None) -> None:
    """Expose `RSA` as ``dspy.RSA`` (never replacing an ``RSA`` that DSPy itself defines).

    Called by the start-up hook right after ``dspy`` is imported; safe to call again.  The
    class is loaded on first access, through the module's ``__getattr__`` (PEP 562).
    """
    if dspy_module is None:
        import dspy as dspy_module
    namespace = vars(dspy_module)
    own = namespace.get("__getattr__")
    if "RSA" in namespace or getattr(own, "rsa_plugins", False):
        return
    if own is not None:
        try:
            own("RSA")
            return  # DSPy provides an RSA of its own
        except AttributeError:
            pass

    def __getattr__(name: str) -> Any:
        if name == "RSA":
            from .module import RSA

            setattr(dspy_module, "RSA", RSA)
            return RSA
        if own is not None:
            return own(name)
        raise AttributeError(f"module {dspy_module.__name__!r} has no attribute {name!r}")

    __getattr__.rsa_plugins = True  # type: ignore[attr-defined]
    setattr(dspy_module, "__getattr__", __getattr__)


def __getattr__(name: str) -> Any:
    if name in ("RSA", "RSAPrediction"):
        from . import module

        return getattr(module, name)
    if name == "vote_key":
        from .engine import vote_key

        return vote_key
    if name == "DSPyEngine":
        from .engine import DSPyEngine

        return DSPyEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
