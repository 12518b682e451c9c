"""The bad-input table (docs/troubleshooting.md): each input fails with one clear line naming the
parameter, from the CLI (no traceback) and from the Python API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rsa_plugins
from rsa_plugins import ConfigError, Problem

RSA = str(Path(sys.executable).parent / "rsa")
DOWN = "http://127.0.0.1:9/v1"  # nothing listens on port 9 (discard) here

CLI_CASES = [
    (["run", "q", "-N", "4", "-K", "9", "--model", "openai/x"], "aggregation-size"),
    (["run", "q", "-N", "0", "--model", "openai/x"], "population"),
    (["run", "q", "-T", "0", "--model", "openai/x"], "steps"),
    (["run", "q", "-K", "0", "--model", "openai/x"], "aggregation-size"),
    (["run", "q", "--selection", "best", "--model", "openai/x"], "selection"),
    (["run", "q", "--temperature", "-1", "--model", "openai/x"], "temperature"),
    (["run", "q", "--max-tokens", "0", "--model", "openai/x"], "max-tokens"),
    (["run", "", "--model", "openai/x"], "problem"),
    (["run", "q", "--model", "nonsense-model"], "model"),
    (["run", "q", "--model", "hosted_vllm/x", "--api-base", DOWN], "api-base"),
    (["eval", "--task", "rg:no_such_dataset", "--model", "openai/x"], "no_such_dataset"),
    (["eval", "--task", "gsm8k", "--model", "openai/x"], "task"),
]


@pytest.mark.parametrize("args, word", CLI_CASES, ids=[" ".join(a[:4]) for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_clear_line(args, word, tmp_path):
    proc = subprocess.run([RSA, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                               "HOME": str(Path.home())})
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and word in lines[0], proc.stderr


@pytest.mark.parametrize("kwargs, word", [
    (dict(population=4, aggregation_size=9), "aggregation_size"),
    (dict(steps=0), "steps"),
    (dict(view="summary"), "view"),
    (dict(kind="poetry"), "kind"),
    (dict(selection="best"), "selection"),
])
def test_api_bad_config_fails_before_any_call(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        rsa_plugins.run("q", model="hosted_vllm/x", api_base=DOWN, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(populaton=5, population=2, aggregation_size=2),
     "unknown option 'populaton' (did you mean 'population'?)"),
    (dict(agregation_size=2), "unknown option 'agregation_size' (did you mean 'aggregation_size'?)"),
    (dict(api_kye="k"), "unknown option 'api_kye' (did you mean 'api_key'?)"),
    (dict(target="42"), "unknown option 'target'"),
])
def test_api_refuses_misspelled_options_naming_the_closest(kwargs, message):
    """A typo used to run with the default and say nothing (issue 22, item 3)."""
    with pytest.raises(ConfigError) as err:
        rsa_plugins.run("q", model="hosted_vllm/x", api_base=DOWN, **kwargs)
    assert str(err.value) == message


def test_api_passes_documented_engine_options_and_an_engine_takes_none():
    from fakes import ScriptedEngine

    # LiteLLM's request arguments and vLLM's extra sampling fields are documented pass-through
    res = rsa_plugins.run("q", model="hosted_vllm/x", api_base=DOWN, population=1,
                          aggregation_size=1, steps=1, max_retries=0, top_k=20,
                          reasoning_effort="low", extra_headers={"X-Trace": "1"}, progress=False)
    assert res.failed  # it ran (and found nothing listening), instead of refusing
    with pytest.raises(ConfigError, match="unknown option 'timeout'"):
        rsa_plugins.run("q", ScriptedEngine(), population=2, aggregation_size=1, steps=1,
                        timeout=5)


def test_config_refuses_misspelled_fields():
    with pytest.raises(ConfigError, match=r"unknown RSAConfig field 'populaton' \(did you mean "
                                          r"'population'\?\)"):
        rsa_plugins.RSAConfig(populaton=5)
    assert rsa_plugins.RSAConfig(population=5).replace(steps=2).population == 5


def test_api_empty_problem_and_bad_model():
    with pytest.raises(ValueError, match="non-empty"):
        Problem("   ")
    with pytest.raises(ValueError, match="provider"):
        rsa_plugins.run("q", model="nonsense-model")
    with pytest.raises(ValueError, match="transport"):
        rsa_plugins.run("q", model="hosted_vllm/x", api_base=DOWN, transport="carrier-pigeon")


def test_api_unreachable_server_reports_a_failed_problem():
    res = rsa_plugins.run("q", model="hosted_vllm/x", api_base=DOWN, population=2,
                          aggregation_size=1, steps=2, max_retries=1, backoff=0.01,
                          progress=False)
    assert res.failed and res.answer is None
    assert res.steps[0]["failed"] == 2 and res.usage.retries == 2
    error = res.population[0].completion.error
    assert error and "onnect" in error, error  # names the connection failure
