"""The extras bring what the frameworks' shipped tasks need (issue 22, item 7): after
``bash .ci/install`` (which installs the ``all`` extra) minerva_math, ifeval, MIPROv2 and
inspect_evals' tasks load."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_extras_bring_the_frameworks_task_dependencies():
    got = extras()
    assert "lm-eval[math,ifeval]==0.4.13" in got["lm-eval"]
    assert any(d.startswith("dspy[optuna]") for d in got["dspy"])
    assert any(d.startswith("inspect-evals") for d in got["inspect-evals"])
    everything = got["all"][0]
    assert all(name in everything for name in ("lm-eval", "inspect-evals", "dspy"))
    installed = re.search(r'install -q -e "\.\[([^\]]*)\]"', (ROOT / ".ci" / "install").read_text())
    assert installed and "all" in installed.group(1).split(",")


@pytest.mark.parametrize("module", [
    "lm_eval.tasks.minerva_math.utils",  # sympy's LaTeX parser on antlr4 4.11
    "lm_eval.tasks.ifeval.utils",  # langdetect, immutabledict, nltk
    "lm_eval.tasks.hendrycks_math.utils",
    "optuna",  # DSPy's MIPROv2
    "inspect_evals.gsm8k", "inspect_evals.gpqa", "inspect_evals.mmlu", "inspect_evals.aime2025",
])
def test_shipped_tasks_load(module):
    importlib.import_module(module)


def test_miprov2_builds():
    dspy = pytest.importorskip("dspy")
    lm = dspy.LM("openai/x", api_key="k")
    assert dspy.MIPROv2(metric=lambda *a, **k: 1.0, auto="light", prompt_model=lm,
                        task_model=lm) is not None
