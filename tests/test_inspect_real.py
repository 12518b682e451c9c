"""The Inspect AI adapter against the real SmolLM2 model on vLLM's CPU server.

The stock ``inspect eval`` command runs as a subprocess (through Inspect's ``vllm/`` provider and
its OpenAI-compatible ``openai-api/`` provider), and ``eval()`` runs in-process.  SmolLM2-135M is
weak, so the tests check the machinery (calls, spans, scores, choice marking), not accuracy.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import eval  # noqa: E402
from inspect_ai.log import EvalLog, read_eval_log  # noqa: E402
from inspect_ai.model import get_model  # noqa: E402

from rsa_plugins.adapters.inspect import rsa  # noqa: E402
from test_inspect import INSPECT, load_task_module, step_span  # noqa: E402

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parent.parent
N, K, T = 4, 2, 2


def inspect_eval(args: list[str], log_dir: Path, env: dict[str, str]) -> EvalLog:
    """Run the `inspect eval` command; return its log (fail with its output if it fails)."""
    cmd = [INSPECT, "eval", *args, "--log-dir", str(log_dir), "--display", "plain",
           "--max-tokens", "64"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    [path] = sorted(log_dir.glob("*.eval"))
    return read_eval_log(str(path))


def rsa_args(solver: str = "rsa") -> list[str]:
    return ["--solver", solver, "-S", f"population={N}", "-S", f"aggregation_size={K}",
            "-S", f"steps={T}"]


def check_rsa_sample(sample) -> None:
    """N x T model calls, one span per step holding N of them, and the metrics of each step."""
    models = [e for e in sample.events if e.event == "model"]
    assert len(models) == N * T
    assert Counter(step_span(sample, e) for e in models) == {f"step {t}": N for t in range(1, T + 1)}
    infos = [e for e in sample.events if e.event == "info" and e.source == "rsa"]
    assert [i.data["step"] for i in infos] == list(range(1, T + 1))
    assert [step_span(sample, i) for i in infos] == [f"step {t}" for t in range(1, T + 1)]
    assert len({e.config.seed for e in models}) == N * T
    assert all(e.output.usage and e.output.usage.output_tokens > 0 for e in models)
    store = sample.store
    assert len(store["RSAStore:steps"]) == T and len(store["RSAStore:population"]) == N
    if store["RSAStore:chosen"] is not None:
        assert sample.output.completion == store["RSAStore:population"][store["RSAStore:chosen"]]["text"]


def test_cli_reasoning_gym_with_vllm_provider(vllm_server, tmp_path):
    log = inspect_eval(
        ["tasks/inspect/rg_offline.py", *rsa_args("rsa"), "--model",
         f"vllm/{vllm_server.model_name}", "--limit", "3"],
        tmp_path, {"VLLM_BASE_URL": vllm_server.base_url})
    assert log.status == "success"
    assert log.eval.solver == "rsa"
    assert [s.solver for s in log.plan.steps] == ["rsa_plugins/rsa"]
    assert len(log.samples) == 3
    for sample in log.samples:
        check_rsa_sample(sample)
        score = sample.scores["rg_score"]
        assert score.value in ("C", "I")
        assert score.answer == sample.store["RSAStore:answer"]
    usage = log.stats.model_usage[f"vllm/{vllm_server.model_name}"]
    events = [e for s in log.samples for e in s.events if e.event == "model"]
    assert usage.output_tokens == sum(e.output.usage.output_tokens for e in events)


def test_cli_multiple_choice_scores_the_rsa_answer_through_choice(vllm_server, tmp_path):
    log = inspect_eval(
        ["tasks/inspect/mc_offline.py", *rsa_args("rsa_plugins/rsa"), "-S", "temperature=0.6",
         "--model", f"openai-api/local/{vllm_server.model_name}"],
        tmp_path, {"LOCAL_BASE_URL": vllm_server.base_url, "LOCAL_API_KEY": "unused"})
    assert log.status == "success"
    answered = 0
    for sample in log.samples:
        check_rsa_sample(sample)
        assert {e.config.temperature for e in sample.events if e.event == "model"} == {0.6}
        answer = sample.store["RSAStore:answer"]
        score = sample.scores["choice"]
        assert score.answer == (answer or "")
        assert (score.value == "C") == (answer == sample.target)
        answered += answer is not None
    assert len(log.samples) == 10
    # 40 final candidates; SmolLM2 names a parseable letter in about a quarter of its answers
    assert answered >= 1


def test_cli_task_with_its_own_solver_is_unchanged(vllm_server, tmp_path):
    log = inspect_eval(
        ["tasks/inspect/mc_offline.py", "--model", f"vllm/{vllm_server.model_name}", "--limit", "2"],
        tmp_path, {"VLLM_BASE_URL": vllm_server.base_url})
    assert [s.solver for s in log.plan.steps] == ["multiple_choice"]
    for sample in log.samples:
        assert sum(e.event == "model" for e in sample.events) == 1
        assert not any(k.startswith("RSAStore:") for k in sample.store)
        assert sample.scores["choice"].value in ("C", "I")


def test_eval_in_process(vllm_server, tmp_path):
    task = load_task_module("rg_offline").rg_offline(limit=2)
    model = get_model(f"vllm/{vllm_server.model_name}", base_url=vllm_server.base_url)
    [log] = eval(task, model=model, solver=rsa(population=N, aggregation_size=K, steps=T, seed=3),
                 max_tokens=48, log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    assert len(log.samples) == 2
    for sample in log.samples:
        check_rsa_sample(sample)
        assert all(e.config.max_tokens == 48 for e in sample.events if e.event == "model")
        assert sample.scores["rg_score"].value in ("C", "I")
        assert sample.store["RSAStore:config"]["seed"] == 3
