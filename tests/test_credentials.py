"""Errors a newcomer meets first: a missing or refused API key, no access, an unknown model.

Each ends the run in one line naming what to set or check, without retries: a missing key
before any request, a 401 / 403 / 404 answer at the first one (requests already in flight
excepted).  Through the `rsa` command, the Python API and lm-eval's `rsa-litellm`, which builds
the same engine.  (Inspect and DSPy call models through their own clients: test_dspy.py checks
DSPy's one line.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rsa_plugins
from openai_stub import StubServer
from rsa_plugins.engines.errors import FatalAPIError, MissingCredentials
from test_cli import run_rsa

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def test_cli_missing_key_is_one_line_and_sends_nothing(tmp_path: Path) -> None:
    with StubServer() as stub:  # an Anthropic model pointed at the stub: nothing may reach it
        proc = run_rsa("run", "What is 17 * 23?", "--model", "anthropic/claude-x", "--api-base",
                       stub.base_url, "--out", str(tmp_path / "o"), drop=KEYS)
        seen = stub.stats()
    assert proc.returncode == 2
    assert lines(proc.stderr) == [
        "rsa run: error: --model anthropic/claude-x: model anthropic/claude-x needs an API "
        "key: set ANTHROPIC_API_KEY (export ANTHROPIC_API_KEY=...) or pass api_key=..."]
    assert seen == [] and not (tmp_path / "o").exists()


def test_cli_missing_openai_key_names_the_variable(tmp_path: Path) -> None:
    proc = run_rsa("run", "What is 17 * 23?", "--model", "openai/gpt-4o-mini", "--out",
                   str(tmp_path / "o"), drop=KEYS)
    assert proc.returncode == 2 and len(lines(proc.stderr)) == 1, proc.stderr
    assert "set OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("status, words", [
    ("401", "the provider refused the credentials"),
    ("403", "the provider denied access"),
    ("404", "no such model"),
])
def test_cli_refused_call_is_one_line_without_retries(status: str, words: str,
                                                      tmp_path: Path) -> None:
    with StubServer(faults={status: 1.0}) as stub:
        proc = run_rsa("eval", "--task", "rg:basic_arithmetic", "--limit", "3", "-N", "4",
                       "-K", "2", "-T", "2", "--model", "hosted_vllm/stub", "--api-base",
                       stub.base_url, "--out", str(tmp_path / "o"), "--no-progress")
        seen = stub.stats()
    assert proc.returncode == 1
    [line] = lines(proc.stderr)[-1:]
    assert line.startswith(f"rsa eval: error: model hosted_vllm/stub: {words} (")
    assert f"({status})" in line and "Traceback" not in proc.stderr + proc.stdout
    # one request per problem at most (hosted_vllm takes n=N): none retried, none sent after
    assert 1 <= len(seen) <= 3 and {s["behaviour"] for s in seen} == {status}


def test_python_missing_key_raises_before_any_call(no_keys: None) -> None:
    with pytest.raises(MissingCredentials, match="set OPENAI_API_KEY"):
        rsa_plugins.run("What is 17 * 23?", model="openai/gpt-4o-mini", population=2,
                        aggregation_size=1, steps=1)
    with pytest.raises(ValueError, match="names no LiteLLM provider"):
        rsa_plugins.run("q", model="nosuchprovider/x")


def test_python_refused_key_raises_once_without_retries() -> None:
    with StubServer(faults={"401": 1.0}) as stub:
        with pytest.raises(FatalAPIError, match="refused the credentials") as err:
            rsa_plugins.run(["What is 2 + 2?", "What is 3 + 3?"], model="hosted_vllm/stub",
                            api_base=stub.base_url, api_key="sk-wrong-0123456789",
                            population=4, aggregation_size=2, steps=2, progress=False)
        seen = stub.stats()
    assert "check the api_key given" in str(err.value)
    assert "sk-wrong-0123456789" not in str(err.value)
    assert 1 <= len(seen) <= 2  # at most the first request of each problem, in flight together


def test_lm_eval_rsa_litellm_missing_key_ends_with_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(
        [str(BIN / "lm_eval"), "--model", "rsa-litellm", "--model_args",
         "model=openai/gpt-4o-mini,population=2,aggregation_size=1,steps=1",
         "--tasks", "rsa_rg_arithmetic", "--include_path", str(REPO / "tasks" / "lm_eval"),
         "--limit", "1"], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode != 0
    last = lines(proc.stderr)[-1]
    assert last.startswith("lm_eval: error: model openai/gpt-4o-mini needs an API key: set "
                           "OPENAI_API_KEY"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
