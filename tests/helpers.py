"""Small helpers shared by tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def load_module(path: Path) -> ModuleType:
    """Import the Python file at `path` (a repository script, e.g. a recipe) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def lm_eval_scores(results: dict[str, Any], task: str) -> dict[str, float]:
    """A task's metrics in lm-eval's results (``"metric,filter" -> value``, no stderr)."""
    row = results["results"][task]
    return {k: float(v) for k, v in row.items()
            if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
