"""Start-up hook: registers our plugins into frameworks right after they are imported.

A ``.pth`` file installed with the package imports this module at interpreter start.  It only
adds a tiny finder to ``sys.meta_path`` (no framework is imported): when one of the modules in
`HOOKS` finishes importing, the named callback runs.  Registering *after* the framework's own
module has run matters: lm-eval 0.4.13 breaks its built-in model names if a model is
registered before ``lm_eval.models`` is imported.

Set ``RSA_PLUGINS_NO_HOOK=1`` to switch the hook off.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

#: module name -> "package.module:function" called with the imported module
HOOKS: dict[str, str] = {
    "lm_eval.models": "rsa_plugins.adapters.lm_eval:register",
    "dspy": "rsa_plugins.adapters.dspy:install",
    "litellm": "rsa_plugins.adapters.litellm:register",
}


def _run_callback(target: str, module: ModuleType) -> None:
    mod_name, func = HOOKS[target].split(":")
    try:
        getattr(importlib.import_module(mod_name), func)(module)
    except Exception as exc:  # noqa: BLE001 - a plugin must never break the framework's import
        import warnings

        warnings.warn(f"rsa-plugins could not register with {target}: {exc}", stacklevel=2)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any, target: str) -> None:
        self.inner, self.target = inner, target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _run_callback(self.target, module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ... for tools
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name not in HOOKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, name)
                return spec
        return None


def hook_disabled() -> bool:
    """Whether ``RSA_PLUGINS_NO_HOOK`` switches the plugins' automatic registration off."""
    return os.environ.get("RSA_PLUGINS_NO_HOOK", "").strip().lower() in ("1", "true", "yes", "on")


def install() -> None:
    """Add the finder once (idempotent); handle frameworks that are already imported."""
    if hook_disabled():
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name in HOOKS:
        if name in sys.modules:
            _run_callback(name, sys.modules[name])

