"""The real ``lm_eval`` command with a real model (SmolLM2-135M on vLLM's CPU build).

Each test runs lm_eval as a subprocess, as a user types it, and checks what it wrote: the
population metrics, the RSA trace (one generation per slot and step, K parents each) and the
number of ``LLM.generate`` calls the in-process engine made (one per RSA step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tasks" / "lm_eval"
LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
N, K, T, LIMIT = 4, 2, 2, 3
METRICS = ("exact_match", "mean_accuracy", "majority_accuracy", "pass_at_n")


def lm_eval(*args: str, tmp_path: Path) -> tuple[dict, list[dict]]:
    """Run ``lm_eval ARGS --output_path tmp --log_samples``; return results and samples."""
    from rsa_plugins.embedded import cpu_env

    env = {**os.environ, **cpu_env(), "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([LM_EVAL, *args, "--output_path", str(tmp_path / "out"), "--log_samples"],
                         env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    samples_file = next((tmp_path / "out").rglob("samples_*.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines() if line]
    return results, samples


def check_population_results(results: dict, samples: list[dict], trace: Path) -> None:
    from rsa_plugins.trace import load

    agg = results["results"]["rsa_rg_arithmetic"]
    for m in METRICS:
        assert 0.0 <= agg[f"{m},none"] <= 1.0, m
    assert agg["mean_accuracy,none"] <= agg["pass_at_n,none"]
    assert len(samples) == LIMIT
    for s in samples:
        assert s["mean_accuracy"] in {i / N for i in range(N + 1)}
        assert s["mean_accuracy"] <= s["pass_at_n"]
        assert s["resps"][0][0] == s["filtered_resps"][0]
    events = load(trace)
    gens = [e for e in events if e["event"] == "generation"]
    assert len(gens) == LIMIT * N * T
    assert {e["problem"] for e in gens} == {f"rsa_rg_arithmetic/{s['doc_id']}" for s in samples}
    assert all(len(g["parents"]) == K for g in gens if g["step"] > 1)
    assert all(g["error"] is None and g["completion_tokens"] > 0 for g in gens)
    # the returned text is one member of the final population
    for s in samples:
        final = {g["text"] for g in gens if g["step"] == T
                 and g["problem"] == f"rsa_rg_arithmetic/{s['doc_id']}"}
        assert s["resps"][0][0] in final
    info = results["config"]["rsa"]
    assert (info["config"]["population"], info["config"]["aggregation_size"],
            info["config"]["steps"]) == (N, K, T)
    assert [row["step"] for row in info["steps"]] == list(range(1, T + 1))
    assert all(row["population"] == LIMIT * N for row in info["steps"])


def test_rsa_vllm_on_the_stock_lm_eval_command(smollm2_dir, tmp_path):
    trace = tmp_path / "trace.jsonl"
    results, samples = lm_eval(
        "--model", "rsa-vllm", "--model_args",
        f"pretrained={smollm2_dir},population={N},aggregation_size={K},steps={T},"
        f"enforce_eager=True,max_model_len=2048,max_num_batched_tokens=16384,trace={trace}",
        "--tasks", "rsa_rg_arithmetic", "--include_path", str(TASKS), "--limit", str(LIMIT),
        "--gen_kwargs", "max_gen_toks=48", tmp_path=tmp_path)
    check_population_results(results, samples, tmp_path / "trace.rsa_rg_arithmetic.jsonl")
    info = results["config"]["rsa"]
    assert info["engine"] == "vllm" and info["max_model_len"] == 2048
    assert info["engine_calls"] == T  # one LLM.generate per RSA step, all problems together
    assert info["runs"][0]["config"]["max_tokens"] == 48


def test_rsa_litellm_on_the_stock_lm_eval_command(vllm_server, tmp_path):
    trace = tmp_path / "trace.jsonl"
    results, samples = lm_eval(
        "--model", "rsa-litellm", "--model_args",
        f"model=hosted_vllm/{vllm_server.model_name},api_base={vllm_server.base_url},"
        f"population={N},aggregation_size={K},steps={T},max_model_len=2048,trace={trace}",
        "--tasks", "rsa_rg_arithmetic", "--include_path", str(TASKS), "--limit", str(LIMIT),
        "--gen_kwargs", "max_gen_toks=48", "--apply_chat_template", tmp_path=tmp_path)
    check_population_results(results, samples, tmp_path / "trace.rsa_rg_arithmetic.jsonl")
    assert results["config"]["rsa"]["engine"] == "litellm"
    # with --apply_chat_template the context is the chat messages; RSA sent them as chat
    assert json.loads(samples[0]["arguments"]["gen_args_0"]["arg_0"])[-1]["role"] == "user"


def test_hf_model_still_runs_with_the_plugin_installed(smollm2_dir, tmp_path):
    results, samples = lm_eval(
        "--model", "hf", "--model_args", f"pretrained={smollm2_dir},dtype=float32",
        "--device", "cpu", "--tasks", "rsa_rg_arithmetic", "--include_path", str(TASKS),
        "--limit", "1", "--gen_kwargs", "max_gen_toks=16", tmp_path=tmp_path)
    assert len(samples) == 1
    # a plain model's answer is a population of one: the population metrics equal exact_match
    s = samples[0]
    assert s["mean_accuracy"] == s["majority_accuracy"] == s["pass_at_n"] == s["exact_match"]
    assert "rsa" not in results["config"]
