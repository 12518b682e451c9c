"""API keys never reach traces, summaries, logs, lm-eval results or Inspect logs.

A key is planted (in the environment, and as an argument where the entry point takes one), runs
go through every entry point against a loopback stub that records the Authorization header, and
every file the runs wrote (Inspect's compressed .eval logs decoded) plus everything they printed
is searched for the key.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rsa_plugins
from openai_stub import StubServer

SECRET = "sk-rsa-plugins-PLANTED-7f3a9c2e51"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def leaks(root: Path, *texts: str) -> list[str]:
    """Places under `root` (and in `texts`) where the secret appears."""
    found = [f"output #{i}" for i, t in enumerate(texts) if SECRET in t]
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if SECRET.encode() in data:
            found.append(str(path))
        if path.suffix == ".eval":  # a compressed archive: read it back whole through Inspect
            from inspect_ai.log import read_eval_log

            if SECRET in read_eval_log(str(path)).model_dump_json():
                found.append(f"{path} (decoded)")
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                found += [f"{path}!{m}" for m in z.namelist() if SECRET.encode() in z.read(m)]
    return found


@pytest.fixture(scope="module")
def stub():
    with StubServer() as server:
        yield server


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", **extra}


def test_core_run_and_trace(stub, tmp_path, capfd):
    trace = tmp_path / "t.jsonl"
    res = rsa_plugins.run(["What is 40 + 2?"] * 2, model="hosted_vllm/stub", api_base=stub.base_url,
                          api_key=SECRET, population=2, aggregation_size=2, steps=2, trace=trace,
                          progress=True)
    assert all(r.answer == "42" for r in res)
    assert stub.stats()[-1]["auth"] == f"Bearer {SECRET}", "the key was really used"
    out = capfd.readouterr()
    assert leaks(tmp_path, out.out, out.err, repr(res)) == []


def test_cli_outputs(stub, tmp_path):
    proc = subprocess.run(
        [str(BIN / "rsa"), "eval", "--task", "rg:basic_arithmetic", "--limit", "2", "-N", "2",
         "-K", "1", "-T", "2", "--model", "hosted_vllm/stub", "--api-base", stub.base_url,
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env(HOSTED_VLLM_API_KEY=SECRET))
    assert proc.returncode == 0, proc.stderr
    assert stub.stats()[-1]["auth"] == f"Bearer {SECRET}"
    assert (tmp_path / "out" / "trace.jsonl").exists()
    assert leaks(tmp_path, proc.stdout, proc.stderr) == []


def test_lm_eval_results_and_samples(stub, tmp_path):
    proc = subprocess.run(
        [str(BIN / "lm_eval"), "--model", "rsa-litellm", "--model_args",
         f"model=hosted_vllm/stub,api_base={stub.base_url},population=2,aggregation_size=1,steps=2,"
         f"trace={tmp_path / 'trace.jsonl'}",
         "--tasks", "rsa_rg_arithmetic", "--include_path", str(REPO / "tasks" / "lm_eval"),
         "--limit", "2", "--apply_chat_template", "--output_path", str(tmp_path / "res"),
         "--log_samples"],
        capture_output=True, text=True, timeout=600, env=env(HOSTED_VLLM_API_KEY=SECRET),
        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stub.stats()[-1]["auth"] == f"Bearer {SECRET}"
    assert list((tmp_path / "res").rglob("results_*.json"))
    assert leaks(tmp_path, proc.stdout, proc.stderr) == []


def test_inspect_logs(stub, tmp_path):
    proc = subprocess.run(
        [str(BIN / "inspect"), "eval", "tasks/inspect/mc_offline.py",
         "--solver", "rsa", "-S", "population=2", "-S", "aggregation_size=1", "-S", "steps=2",
         "--model", "openai-api/local/stub", "--limit", "2", "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env=env(LOCAL_BASE_URL=stub.base_url, LOCAL_API_KEY=SECRET, INSPECT_DISPLAY="plain"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stub.stats()[-1]["auth"] == f"Bearer {SECRET}"
    assert list((tmp_path / "logs").glob("*.eval"))
    assert leaks(tmp_path, proc.stdout, proc.stderr) == []
