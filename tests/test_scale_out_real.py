"""Scale-out recipes with the real SmolLM2 model on vLLM's CPU build (docs/scale-out.md).

(a) ``lm_eval --model rsa-vllm`` with ``data_parallel_size=2``: two replica processes, each with
    its own vLLM CPU engine bound to its own core, each running the whole RSA loop on its half
    of the problems.
(b) Two vLLM CPU OpenAI servers behind the LiteLLM Router of ``integrations/scale-out/router.yaml``,
    driven by ``integrations/scale-out/router.py``; both servers' own request counters are read.

What a CPU cannot show is the speed-up on two GPUs; these tests check placement, partitioning,
call counts and results.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from servers import VLLMServer

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
RECIPE = ROOT / "integrations" / "scale-out"


def _env(**extra: str) -> dict[str, str]:
    from rsa_plugins.embedded import cpu_env

    return {**os.environ, **cpu_env(), "HF_DATASETS_OFFLINE": "1", **extra}


def test_lm_eval_rsa_vllm_with_two_data_parallel_replicas(smollm2_dir, tmp_path):
    n, k, t, limit = 2, 2, 2, 4
    trace = tmp_path / "dp.jsonl"
    command = [
        LM_EVAL, "--model", "rsa-vllm", "--model_args",
        f"pretrained={smollm2_dir},data_parallel_size=2,population={n},aggregation_size={k},"
        f"steps={t},enforce_eager=True,max_model_len=2048,max_num_batched_tokens=16384,"
        f"trace={trace}",
        "--tasks", "rsa_rg_arithmetic", "--include_path", str(ROOT / "tasks" / "lm_eval"),
        "--limit", str(limit), "--gen_kwargs", "max_gen_toks=32",
        "--output_path", str(tmp_path / "out"), "--log_samples"]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, start_new_session=True)
    try:
        proc.wait(timeout=1800)
        try:  # the replicas' vLLM engine processes must end with lm_eval, not hold its pipes
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("processes started by lm_eval outlived it (orphaned replica engines)")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its process group
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, stderr[-4000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    samples = [json.loads(line) for line in
               next((tmp_path / "out").rglob("samples_*.jsonl")).read_text().splitlines() if line]

    info = results["config"]["rsa"]
    replicas = info["replicas"]
    # two worker processes, each on its own core, each one LLM.generate per RSA step
    assert len(replicas) == 2 and len({r["pid"] for r in replicas}) == 2
    assert sorted(r["env"]["VLLM_CPU_OMP_THREADS_BIND"] for r in replicas) == ["0", "1"]
    assert [r["engine_calls"] for r in replicas] == [t, t]
    assert [r["requests"] for r in replicas] == [limit // 2, limit // 2]
    assert info["engine_calls"] == 2 * t and info["data_parallel_size"] == 2
    assert [row["step"] for row in info["steps"]] == list(range(1, t + 1))
    assert all(row["population"] == limit * n for row in info["steps"])

    # same output shape as one replica: population metrics per sample, answer from the population
    from rsa_plugins.trace import load

    assert len(samples) == limit
    agg = results["results"]["rsa_rg_arithmetic"]
    assert agg["mean_accuracy,none"] <= agg["pass_at_n,none"]
    gens = []
    for i in range(2):
        mine = [e for e in load(trace.with_name(f"dp.replica{i}.rsa_rg_arithmetic.jsonl")) if e["event"] == "generation"]
        assert len(mine) == (limit // 2) * n * t
        gens += mine
    assert len({g["problem"] for g in gens}) == limit
    for s in samples:
        assert s["mean_accuracy"] in {i / n for i in range(n + 1)}
        final = {g["text"] for g in gens
                 if g["step"] == t and g["problem"] == f"rsa_rg_arithmetic/{s['doc_id']}"}
        assert s["resps"][0][0] in final


def _served(port: int) -> float:
    """Requests a vLLM server finished (``vllm:request_success_total``, all finish reasons)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    return sum(float(m.group(1)) for m in
               re.finditer(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def test_router_over_two_vllm_servers_balances_rsa_requests(smollm2_dir, tmp_path):
    problems, n, k, t = 4, 4, 2, 2
    servers = [VLLMServer(smollm2_dir, "smollm2", log_path=tmp_path / f"server{i}.log",
                          startup_timeout=float(os.environ.get("RSA_VLLM_STARTUP_TIMEOUT", "600")),
                          env={"VLLM_CPU_OMP_THREADS_BIND": str(i)}) for i in range(2)]
    try:
        for s in servers:
            s.start()
        before = [_served(s.port) for s in servers]
        env = _env(RSA_SERVED_MODEL="smollm2", RSA_VLLM_BASE_0=servers[0].base_url,
                   RSA_VLLM_BASE_1=servers[1].base_url)
        # the docs' `python integrations/scale-out/router.py integrations/scale-out/router.yaml ...`
        out = subprocess.run(
            [sys.executable, "integrations/scale-out/router.py", "integrations/scale-out/router.yaml",
             "--task", "rg:basic_arithmetic", "--limit", str(problems), "-N", str(n), "-K", str(k),
             "-T", str(t), "--max-tokens", "32", "--max-model-len", "2048",
             "--trace", str(tmp_path / "router.jsonl")],
            env=env, capture_output=True, text=True, timeout=1200, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-4000:]
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        served = [_served(s.port) - b for s, b in zip(servers, before)]
        assert all(s.alive() for s in servers)
    finally:
        for s in servers:
            s.stop()
    print(f"\n[router] requests per server: {served}")
    assert summary["problems"] == problems and summary["failed"] == 0
    assert summary["requested"] == problems * n * t
    # every RSA generation was one request (the router path asks one sample per call), and
    # both servers took a share of them
    assert sum(served) == problems * n * t
    assert min(served) > 0
    from rsa_plugins.trace import load

    gens = [e for e in load(tmp_path / "router.jsonl") if e["event"] == "generation"]
    assert len(gens) == problems * n * t and all(g["error"] is None for g in gens)


def test_router_config_expands_the_environment(monkeypatch):
    sys.path.insert(0, str(RECIPE))
    try:
        from router import load_config
    finally:
        sys.path.remove(str(RECIPE))
    monkeypatch.setenv("RSA_VLLM_BASE_1", "http://10.0.0.2:9000/v1")
    monkeypatch.delenv("RSA_VLLM_BASE_0", raising=False)
    monkeypatch.delenv("RSA_SERVED_MODEL", raising=False)
    config = load_config(RECIPE / "router.yaml")
    bases = [m["litellm_params"]["api_base"] for m in config["model_list"]]
    assert bases == ["http://127.0.0.1:8000/v1", "http://10.0.0.2:9000/v1"]
    assert {m["model_name"] for m in config["model_list"]} == {"rsa-model"}
    assert config["router_settings"]["routing_strategy"] == "least-busy"
