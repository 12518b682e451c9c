"""lm-evaluation-harness models ``rsa-vllm`` and ``rsa-litellm``: registration and entry points.

    lm_eval --model rsa-vllm \\
        --model_args pretrained=Qwen/Qwen3-4B,population=16,aggregation_size=4,steps=10 \\
        --tasks rsa_aime25 --include_path tasks/lm_eval
    lm_eval --model rsa-litellm --model_args model=openai/gpt-4o-mini,population=8 --tasks gsm8k

lm-eval 0.4.13 has no plugin discovery for ``--model``, so the names are registered by
`register`: called by the start-up hook right after ``lm_eval.models`` is imported
(`rsa_plugins._hooks`), by the ``rsa-lm-eval`` console script, or by you before
``lm_eval.simple_evaluate``.  Newer lm-eval versions also find them through the
``lm_eval.models`` entry points.  The models live in `.litellm` and `.vllm` (imported only
when their name is used), what they share in `.generate`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

#: model name -> lazy "module:Class" target (the module is imported only when the name is used)
MODELS = {
    "rsa-vllm": "rsa_plugins.adapters.lm_eval.vllm:RSAVLLM",
    "rsa-litellm": "rsa_plugins.adapters.lm_eval.litellm:RSALiteLLM",
}


def register(module: Any = None) -> None:
    """Add ``rsa-vllm`` and ``rsa-litellm`` to lm-eval's model registry (idempotent).

    ``lm_eval.models`` is imported first: lm-eval fills its built-in names only when the
    registry is empty, so registering into an empty registry would hide ``hf``, ``vllm``, ...
    Names that are already registered (by an entry point, or by you) are left alone.
    """
    del module  # the hook passes the freshly imported lm_eval.models
    import lm_eval.models  # noqa: F401  (registers the built-in names)

    from ._compat import model_registry

    registry = model_registry()

    for name, target in MODELS.items():
        if name not in registry:
            registry.register(name, target=target)
    _one_line_errors()


def main(argv: Sequence[str] | None = None) -> None:
    """``rsa-lm-eval``: the ``lm_eval`` command with the RSA models registered."""
    register()
    from ._compat import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


def _one_line_errors() -> None:
    """Uncaught rsa-plugins errors (a bad model_arg, a run in which every request failed) end
    the process with one line instead of a traceback; ``RSA_DEBUG=1`` keeps the traceback."""
    previous = sys.excepthook
    if getattr(previous, "rsa_plugins", False):
        return

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        from ...engines.base import EngineError
        from ...validate import ConfigError
        from .generate import RSARunError

        if issubclass(kind, (ConfigError, EngineError, RSARunError)) and \
                not os.environ.get("RSA_DEBUG"):
            sys.stderr.write(f"lm_eval: error: {exc} (RSA_DEBUG=1 shows the traceback)\n")
            return
        previous(kind, exc, tb)

    hook.rsa_plugins = True  # type: ignore[attr-defined]
    sys.excepthook = hook
