"""The frameworks' private names rsa-plugins uses, each fenced in one ``_compat.py`` per adapter:
these tests fail as soon as an installed lm-eval or DSPy no longer has one (Inspect's are checked
in test_inspect.py)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

ADAPTERS = Path(__file__).resolve().parents[1] / "rsa_plugins" / "adapters"


def test_lm_eval_still_has_every_private_name_rsa_plugins_uses():
    from rsa_plugins.adapters.lm_eval import _compat

    assert _compat.missing() == []


def test_dspy_still_has_every_private_name_rsa_plugins_uses():
    dspy = pytest.importorskip("dspy")
    from rsa_plugins.adapters.dspy import _compat

    assert _compat.MISSING == []
    for method in (dspy.Adapter.__call__, dspy.Adapter.acall):
        assert tuple(inspect.signature(method).parameters)[1:] == _compat.ADAPTER_CALL
    sig = dspy.Signature("question -> answer")
    assert _compat.is_default_instructions(sig)
    assert _compat.is_default_instructions(dspy.ChainOfThought(sig).predict.signature)
    assert not _compat.is_default_instructions(sig.with_instructions("Sum the numbers."))


@pytest.mark.parametrize("adapter, framework", [("lm_eval", "lm_eval"), ("dspy", "dspy")])
def test_private_names_are_reached_only_through_compat(adapter, framework):
    """No module of the adapter but _compat imports a private module or underscore name."""
    private = re.compile(rf"^\s*(?:from {framework}\S*\._\w+|from {framework}\S* import .*\b_\w+"
                         rf"|import {framework}\S*\._\w+)", re.M)
    for path in (ADAPTERS / adapter).glob("*.py"):
        if path.name != "_compat.py":
            assert not private.findall(path.read_text()), path.name
