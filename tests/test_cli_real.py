"""The real `rsa` command on the real SmolLM2: over vLLM's OpenAI server and embedded in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rsa_plugins.trace import load
from test_cli import rsa_exe, run_rsa

pytestmark = pytest.mark.real

SMALL = ["--task", "rg:basic_arithmetic", "--limit", "2", "-N", "2", "-K", "2",
         "--max-tokens", "48"]


def server_args(server) -> list[str]:
    return ["--model", f"hosted_vllm/{server.model_name}", "--api-base", server.base_url]


def events(trace: Path, kind: str) -> list[dict]:
    return [e for e in load(trace) if e["event"] == kind]


def test_eval_compare_on_a_real_server(vllm_server, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = run_rsa("eval", *SMALL, "-T", "2", *server_args(vllm_server), "--compare",
                   "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    methods = summary["methods"]
    assert methods["rsa"]["generations_per_problem"] == 4
    assert methods["majority_vote"]["generations_per_problem"] == 4
    for m in ("majority_vote", "self_refine", "rsa"):
        gens = events(out / f"trace-{m}.jsonl", "generation")
        assert len(gens) == 8
        assert all(g["error"] is None and g["completion_tokens"] > 0 for g in gens)
        assert len(events(out / f"trace-{m}.jsonl", "result")) == 2
    assert methods["rsa"]["tokens"] > methods["rsa"]["completion_tokens"] > 0
    assert "generations per problem: rsa 4, majority vote 4" in proc.stdout
    assert "single sample" in proc.stdout
    assert (out / "report.png").stat().st_size > 10_000


def test_run_prints_answer_votes_and_steps(vllm_server, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_rsa("run", "What is 2 + 3? End with 'Answer: <number>'.", "-N", "3", "-K", "2",
                   "-T", "2", "--max-tokens", "48", *server_args(vllm_server), "--out", str(out),
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads((out / "summary.json").read_text())["answer"]
    assert f"answer: {answer}" in proc.stdout
    assert "votes (" in proc.stdout
    rows = [ln.split()[0] for ln in proc.stdout.splitlines() if ln[:1].isdigit()]
    assert rows == ["1", "2"]
    assert len(events(out / "trace.jsonl", "generation")) == 6


def test_interrupted_eval_reports_finished_steps_and_resumes(vllm_server, tmp_path: Path) -> None:
    out = tmp_path / "stop"
    args = ["eval", *SMALL, "-T", "5", *server_args(vllm_server), "--out", str(out)]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err_file:
        proc = subprocess.Popen([*rsa_exe(), *args], stdout=subprocess.DEVNULL, stderr=err_file,
                                env=env)
    trace = out / "trace.jsonl"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if trace.exists() and len(events(trace, "step")) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 130, err[-3000:]
    assert "rsa: interrupted" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    steps = events(trace, "step")
    finished = {}
    for s in steps:
        finished.setdefault(s["problem"], set()).add(s["step"])
    assert not events(trace, "result")

    report = run_rsa("report", str(trace))
    assert report.returncode == 0, report.stderr
    rows = [ln.split() for ln in report.stdout.splitlines() if ln[:1].isdigit()]
    depth = max(max(v) for v in finished.values())
    assert [int(r[0]) for r in rows] == list(range(1, depth + 1))
    assert int(rows[0][1]) == len(finished)  # problems that finished step 1
    assert "incomplete run" in report.stdout
    assert trace.with_suffix(".png").is_file()

    again = run_rsa(*args, timeout=900)  # same --out: resumes from the checkpoints
    assert again.returncode == 0, again.stderr[-3000:]
    keys = {(g["problem"], g["step"], g["slot"]) for g in events(trace, "generation")
            if g["error"] is None}
    assert len(keys) == 2 * 2 * 5
    assert len(events(trace, "result")) == 2
    assert len(events(trace, "run")) == 2


def test_embedded_default_runs_in_process(smollm2_dir: Path, tmp_path: Path) -> None:
    """No --model: SmolLM2 on in-process vLLM (the README's first command, smaller)."""
    out = tmp_path / "emb"
    proc = run_rsa("eval", *SMALL, "-T", "2", "--out", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = events(out / "trace.jsonl", "run")[0]
    assert run["engine"] == "vllm"
    assert "embedded" in run["model"]
    gens = events(out / "trace.jsonl", "generation")
    assert len(gens) == 8
    assert all(g["error"] is None and g["completion_tokens"] > 0 for g in gens)
    assert all(g["completion_tokens"] <= 48 for g in gens)
    rows = [ln.split()[0] for ln in proc.stdout.splitlines() if ln[:1].isdigit()]
    assert rows == ["1", "2"]
    assert (out / "report.png").is_file()
