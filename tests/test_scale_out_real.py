"""Scale-out recipes with the real SmolLM2 model on vLLM's CPU build (docs/scale-out.md).

(a) ``lm_eval --model rsa-vllm`` with ``data_parallel_size=2``: vLLM's own data parallelism, one
    ``AsyncLLM`` over two vLLM CPU engine cores (one CPU core each), one problem's requests in
    flight on one engine core.
(b) Two vLLM CPU OpenAI servers behind the LiteLLM Router of ``integrations/scale-out/router.yaml``,
    driven by ``integrations/scale-out/router.py``; both servers' own request counters are read.
(c) The several-machine recipe of ``vllm serve --data-parallel-size``: a head (API server and
    rank 0, ``--data-parallel-address``) and a ``--headless`` node (rank 1), here two processes
    on one host; RSA through ``hosted_vllm/`` at the head's one endpoint, and both ranks' own
    counters read.

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

from helpers import load_module
from servers import VLLMServer

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
RECIPE = ROOT / "integrations" / "scale-out"


def _env(**extra: str) -> dict[str, str]:
    from rsa_plugins.embedded import cpu_env

    return {**os.environ, **cpu_env(), "HF_DATASETS_OFFLINE": "1", **extra}


def test_lm_eval_rsa_vllm_on_vllms_own_data_parallelism(smollm2_dir, tmp_path):
    n, k, t, limit = 2, 2, 2, 4
    trace = tmp_path / "dp.jsonl"
    command = [
        LM_EVAL, "--model", "rsa-vllm", "--model_args",
        f"pretrained={smollm2_dir},data_parallel_size=2,population={n},aggregation_size={k},"
        f"steps={t},enforce_eager=True,dtype=float32,max_model_len=2048,max_num_batched_tokens=16384,"
        f"trace={trace}",
        "--tasks", "rsa_rg_arithmetic", "--include_path", str(ROOT / "tasks" / "lm_eval"),
        "--limit", str(limit), "--gen_kwargs", "max_gen_toks=32",
        "--output_path", str(tmp_path / "out"), "--log_samples"]
    # vLLM binds engine core i (its data-parallel rank) to the i-th "|"-separated core list
    proc = subprocess.Popen(command, env=_env(VLLM_CPU_OMP_THREADS_BIND="0|1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)
    try:
        proc.wait(timeout=1800)
        try:  # vLLM's engine cores and coordinator must end with lm_eval, not hold its pipes
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("processes started by lm_eval outlived it (orphaned vLLM engine cores)")
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
    assert info["engine"] == "vllm-async" and info["data_parallel_size"] == 2 and info["affinity"]
    stats = info["engine_stats"]
    requests = limit * (1 + n * (t - 1))  # step 1: one request of n samples per problem
    # both engine cores served requests, and vLLM's own counters add up to what was sent
    assert sum(stats["placed"]) == requests and all(x > 0 for x in stats["placed"])
    assert [r["rank"] for r in stats["ranks"]] == [0, 1]
    assert all(r["generated_tokens"] > 0 for r in stats["ranks"])
    assert sum(r["requests"] for r in stats["ranks"]) >= requests
    assert 0 < info["engine_busy_fraction"] <= 1
    assert stats["prefix_hit_rate_per_problem"]["problems"] == limit
    assert [row["step"] for row in info["steps"]] == list(range(1, t + 1))
    assert all(row["population"] == limit * n for row in info["steps"])

    # same output as on one engine: population metrics per sample, answer from the population
    from rsa_plugins.trace import load

    assert len(samples) == limit
    agg = results["results"]["rsa_rg_arithmetic"]
    assert agg["mean_accuracy,none"] <= agg["pass_at_n,none"]
    gens = [e for e in load(trace.with_name("dp.rsa_rg_arithmetic.jsonl"))
            if e["event"] == "generation"]
    assert len(gens) == limit * n * t and len({g["problem"] for g in gens}) == limit
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


@pytest.mark.slow  # two vLLM servers, minutes on 2 cores: `pytest -m slow -n 0`
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
    load_config = load_module(RECIPE / "router.py").load_config
    monkeypatch.setenv("RSA_VLLM_BASE_1", "http://10.0.0.2:9000/v1")
    monkeypatch.delenv("RSA_VLLM_BASE_0", raising=False)
    monkeypatch.delenv("RSA_SERVED_MODEL", raising=False)
    config = load_config(RECIPE / "router.yaml")
    bases = [m["litellm_params"]["api_base"] for m in config["model_list"]]
    assert bases == ["http://127.0.0.1:8000/v1", "http://10.0.0.2:9000/v1"]
    assert {m["model_name"] for m in config["model_list"]} == {"rsa-model"}
    assert config["router_settings"]["routing_strategy"] == "least-busy"


@pytest.mark.slow  # two vLLM servers, minutes on 2 cores: `pytest -m slow -n 0`
def test_vllm_serve_data_parallel_across_two_nodes_behind_one_endpoint(smollm2_dir, tmp_path):
    """docs/scale-out.md's multi-node recipe with both "nodes" on this host (one CPU core each)."""
    from servers import free_port, wait_http

    port, rpc = free_port(), free_port()
    common = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
              "--max-num-batched-tokens", "16384", "--data-parallel-size", "2",
              "--data-parallel-size-local", "1", "--data-parallel-address", "127.0.0.1",
              "--data-parallel-rpc-port", str(rpc)]
    vllm = str(Path(sys.executable).parent / "vllm")
    nodes = [([vllm, "serve", str(smollm2_dir), "--served-model-name", "smollm2", "--host",
               "127.0.0.1", "--port", str(port), *common], "0"),
             ([vllm, "serve", str(smollm2_dir), "--headless", "--data-parallel-start-rank", "1",
               *common], "1")]
    procs = [subprocess.Popen(cmd, env=_env(VLLM_CPU_OMP_THREADS_BIND=core),
                              stdout=open(tmp_path / f"node{core}.log", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
             for cmd, core in nodes]
    try:
        assert wait_http(f"http://127.0.0.1:{port}/v1/models", 900, 1.0), \
            (tmp_path / "node0.log").read_text()[-3000:]
        import rsa_plugins
        from rsa_plugins.reasoning_gym import reasoning_gym_problems

        problems, n, t = 4, 4, 2
        results = rsa_plugins.run(reasoning_gym_problems("basic_arithmetic", limit=problems),
                                  model="hosted_vllm/smollm2",
                                  api_base=f"http://127.0.0.1:{port}/v1", population=n,
                                  aggregation_size=2, steps=t, max_tokens=32, progress=False,
                                  use_n=False)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
        per_rank = {r: sum(float(m.group(1)) for m in re.finditer(
            rf'^vllm:request_success_total\{{engine="{r}"[^}}]*\}} ([0-9.e+]+)$',
            text.decode(), re.M)) for r in ("0", "1")}
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print(f"\n[data parallel, two nodes] requests per rank: {per_rank}")
    assert all(not r.failed and r.usage.failed == 0 for r in results)
    # one endpoint, two engine ranks in two processes: both served, and nothing else did
    assert sum(per_rank.values()) == problems * n * t and min(per_rank.values()) > 0
