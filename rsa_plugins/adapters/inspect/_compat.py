"""The Inspect AI names rsa-plugins needs that Inspect does not export publicly.

Checked on inspect-ai 0.3.285.  Each private name is imported here and nowhere else, with a
fallback so that a move in Inspect degrades one convenience instead of breaking the solver;
`MISSING` lists the names that were not found, and tests/test_inspect.py fails loudly when it
is not empty.
"""

from __future__ import annotations

from typing import Any

MISSING: list[str] = []

try:  # Inspect's CLI prints this error type as one line, without a traceback
    from inspect_ai._util.error import PrerequisiteError
except ImportError:  # pragma: no cover - moved
    MISSING.append("inspect_ai._util.error.PrerequisiteError")
    PrerequisiteError = Exception  # type: ignore[misc,assignment]

try:  # the eval's generate settings (--temperature, --seed, --max-tokens ...)
    from inspect_ai.model._generate_config import active_generate_config
except ImportError:  # pragma: no cover - moved
    MISSING.append("inspect_ai.model._generate_config.active_generate_config")

    def active_generate_config() -> Any:  # type: ignore[misc]
        from inspect_ai.model import GenerateConfig

        return GenerateConfig()

try:  # registering names: the package-qualified name and the bare solver alias
    from inspect_ai._util.registry import (
        RegistryInfo,
        registry_add,
        registry_has,
        registry_info,
        registry_name,
        set_registry_info,
    )
except ImportError:  # pragma: no cover - moved
    MISSING.append("inspect_ai._util.registry")
    registry_name = None  # type: ignore[assignment]


def qualified_name(name: str) -> str:
    """``name`` for ``@solver``/``@scorer`` such that Inspect registers ``rsa_plugins/<name>``.

    Inspect prefixes the package name only when it can tell that the package is installed; an
    editable install run from the source tree (where setuptools leaves ``rsa_plugins.egg-info``
    without PEP 610 data) would otherwise register the bare name, shadowing other packages.
    """
    if registry_name is None:
        return name
    return name if "/" in registry_name(qualified_name, name) else f"rsa_plugins/{name}"


def add_solver_alias(solver: Any, alias: str) -> bool:
    """Register `alias` as another name of the registered `solver`; False if taken or unsupported."""
    if registry_name is None or registry_has("solver", alias):
        return False

    def aliased(*args: Any, **kwargs: Any) -> Any:
        return solver(*args, **kwargs)

    aliased.__doc__, aliased.__name__ = solver.__doc__, alias
    registry_add(aliased, RegistryInfo(type="solver", name=alias))
    set_registry_info(aliased, registry_info(solver))  # logs record the canonical name
    return True
