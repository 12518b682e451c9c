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


def test_rsa_vllm_lockstep_on_the_stock_lm_eval_command(smollm2_dir, tmp_path):
    trace = tmp_path / "trace.jsonl"
    results, samples = lm_eval(
        "--model", "rsa-vllm", "--model_args",
        f"pretrained={smollm2_dir},population={N},aggregation_size={K},steps={T},lockstep=True,"
        f"enforce_eager=True,dtype=float32,max_model_len=2048,max_num_batched_tokens=16384,trace={trace}",
        "--tasks", "rsa_rg_arithmetic", "--include_path", str(TASKS), "--limit", str(LIMIT),
        "--gen_kwargs", "max_gen_toks=48", tmp_path=tmp_path)
    check_population_results(results, samples, tmp_path / "trace.rsa_rg_arithmetic.jsonl")
    info = results["config"]["rsa"]
    assert info["engine"] == "vllm" and info["max_model_len"] == 2048
    assert info["engine_calls"] == T  # one LLM.generate per RSA step, all problems together
    assert info["runs"][0]["config"]["max_tokens"] == 48


LENGTHS_TASK = """task: rsa_lengths
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["7"], do_sample: true, temperature: 1.0, max_gen_toks: 64}}
metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
"""
MC_TASK = """task: rsa_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
"""
MC_DOCS = [{"question": "The capital of France is", "choices": [" Paris", " a banana"], "label": 0},
           {"question": "Two plus two is", "choices": [" four", " purple"], "label": 0}]
#: the task stops generations at a "7": the count stops within a few numbers, the story (no
#: digits) runs on until the token budget ends
LENGTHS_DOCS = [{"question": "Count from 1 to 20, separated by commas.", "answer": "1, 2"},
                {"question": "Tell a long story about a dog and a cat.", "answer": "Once"}]


def test_rsa_vllm_is_barrier_free_by_default(smollm2_dir, tmp_path):
    """Default rsa-vllm: vLLM's AsyncLLM, each problem moves on alone.  The short problem starts
    its second step while the long one is still in its first; every problem gets exactly
    N x T generations; the engine-busy fraction is in the results and in the trace; the same
    engine scores a log-likelihood task."""
    from rsa_plugins.trace import load

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, task, rows in (("lengths", LENGTHS_TASK, LENGTHS_DOCS), ("mc", MC_TASK, MC_DOCS)):
        docs = tasks / f"{name}.jsonl"
        docs.write_text("".join(json.dumps(d) + "\n" for d in rows))
        (tasks / f"rsa_{name}.yaml").write_text(task.format(docs=docs))
    trace, n, t = tmp_path / "trace.jsonl", 2, 3
    results, _ = lm_eval(
        "--model", "rsa-vllm", "--model_args",
        f"pretrained={smollm2_dir},population={n},aggregation_size=2,steps={t},temperature=0.05,"
        f"enforce_eager=True,dtype=float32,max_model_len=2048,max_num_batched_tokens=16384,trace={trace}",
        "--tasks", "rsa_lengths,rsa_mc", "--include_path", str(tasks), "--apply_chat_template",
        tmp_path=tmp_path)
    # log-likelihoods (a multiple-choice task) come from the same engine, as lm-eval scores them
    assert 0 <= results["results"]["rsa_mc"]["acc,none"] <= 1
    mc = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_rsa_mc_*.jsonl"))
          .read_text().splitlines() if line]
    assert len(mc) == 2
    for sample in mc:
        logliks = [float(r[0][0]) for r in sample["resps"]]
        assert len(logliks) == 2 and all(float("-inf") < x < 0 for x in logliks), logliks
    events = load(trace.with_name("trace.rsa_lengths.jsonl"))
    gens = [e for e in events if e["event"] == "generation"]
    short, long_ = "rsa_lengths/0", "rsa_lengths/1"
    for pid in (short, long_):  # exactly N x T generations, N per step
        mine = [(g["step"], g["slot"]) for g in gens if g["problem"] == pid]
        assert sorted(mine) == [(s, k) for s in range(1, t + 1) for k in range(n)], pid
    length = {pid: max(g["completion_tokens"] for g in gens if g["problem"] == pid and g["step"] == 1)
              for pid in (short, long_)}
    assert length[short] < length[long_] == 64, length  # the workload is what it should be
    # no barrier: when the long problem closed its first step, the short one's step-2
    # requests were already inside the engine (step events record the requests that entered
    # it so far; in lockstep only the 2 step-1 requests could have)
    order = [(e["event"], e["problem"], e["step"]) for e in events
             if e["event"] in ("generation", "step")]
    assert order.index(("step", short, 1)) < order.index(("step", long_, 1))
    long_first = next(e for e in events if e["event"] == "step" and e["problem"] == long_)
    assert long_first["engine_busy"]["requests"] >= 2 + n, long_first
    # per problem, steps close in order, each after its own N generations
    for pid in (short, long_):
        closes = [i for i, (ev, p, _) in enumerate(order) if ev == "step" and p == pid]
        assert [order[i][2] for i in closes] == list(range(1, t + 1))
        for s, i in zip(range(1, t + 1), closes):
            assert sum(1 for ev, p, st in order[:i] if ev == "generation" and p == pid
                       and st == s) == n
    # the engine-busy fraction: in lm-eval's results, at every step event, at the run's end
    info = results["config"]["rsa"]
    assert info["engine"] == "vllm-async" and info["data_parallel_size"] == 1
    assert 0 < info["engine_busy_fraction"] <= 1
    # what vLLM ran with, read back from its config: the budget given, and the offline
    # engine's max_num_seqs where none was given (vLLM's CPU build: 256 for vllm.LLM, 128 for an
    # AsyncLLM in its own usage context); the trace's run record says the same
    settings = info["engine_settings"]
    assert settings["max_num_batched_tokens"] == 16384 and settings["max_num_seqs"] == 256
    [run] = [e for e in events if e["event"] == "run"]
    assert run["engine_settings"] == settings
    busy = info["engine_stats"]["busy"]
    assert busy["requests"] == 2 * (1 + n * (t - 1))  # n samples in one request at step 1
    assert 0 < busy["busy_s"] <= busy["span_s"]
    steps = [e for e in events if e["event"] == "step"]
    assert all(0 < e["engine_busy"]["busy_fraction"] <= 1 for e in steps)
    [end] = [e for e in events if e["event"] == "run_end"]
    assert end["engine"]["busy"]["requests"] == busy["requests"]


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
