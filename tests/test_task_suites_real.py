"""Real model (issue 14): ``lm_eval --model rsa-litellm`` on lm-eval's own gsm8k-cot YAML
(local rows) against SmolLM2-135M on vLLM's CPU server with a context so small that every
aggregation prompt must be fitted.

The 8-shot chat alone is ~860 tokens.  ``--gen_kwargs min_tokens=230`` (a task generation
setting, passed to vLLM like any other) makes every candidate at least 230 tokens long, so the
first step fits 1,350 tokens but the chat plus K=2 full candidates and the aggregation wording
do not.  This vLLM clamps ``max_tokens`` to the room left and answers HTTP 400 only when the
prompt itself is longer than the context -- which is what an unfitted aggregation prompt is.
Fitted (candidates cut to their tails, budget lowered to >= 256), every request fits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import VLLMServer
from task_suites import lm_eval, lm_eval_env, make_suite

pytestmark = pytest.mark.real

LIMIT, MAX_GEN, MIN_TOKENS, N, K, T, DOCS = 1350, 256, 230, 2, 2, 2, 2
#: tokens the aggregation wording adds at least (the problem and candidates come on top)
WORDING = 60


@pytest.fixture(scope="module")
def vllm_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """SmolLM2 served with a 1,350-token context (named like conftest's fixture, so a failing
    test gets the server's log tail)."""
    log = tmp_path_factory.mktemp("vllm-small") / "server.log"
    timeout = float(os.environ.get("RSA_VLLM_STARTUP_TIMEOUT", "600"))
    with VLLMServer(smollm2_dir, "smollm2", log_path=log, startup_timeout=timeout,
                    max_model_len=LIMIT) as server:
        print(f"\n[vllm_server] max_model_len={LIMIT}, ready in {server.startup_seconds:.1f} s")
        yield server


def test_rsa_litellm_fits_gsm8k_cot_into_a_small_context(vllm_server, tmp_path, show):
    from rsa_plugins.embedded import cpu_env

    suite = make_suite("gsm8k-cot", tmp_path, docs=DOCS)
    trace = tmp_path / "trace" / "run.jsonl"
    run = lm_eval(["--model", "rsa-litellm", "--model_args",
                   f"model=hosted_vllm/{vllm_server.model_name},api_base={vllm_server.base_url},"
                   f"population={N},aggregation_size={K},steps={T},max_gen_toks={MAX_GEN},"
                   f"trace={trace}",
                   "--tasks", suite.name, "--include_path", str(suite.include_path),
                   "--apply_chat_template", "--limit", str(DOCS),
                   "--gen_kwargs", f"min_tokens={MIN_TOKENS}"],
                  tmp_path, "out", timeout=1800, env=lm_eval_env(tmp_path, **cpu_env()))
    events = []
    for f in sorted(trace.parent.rglob("*.jsonl")):
        events += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    gens = [e for e in events if e.get("event") == "generation"]
    steps = [e for e in events if e.get("event") == "step"]
    show("\nfitted_prompts per problem and step:",
         [(e["problem"], e["step"], e["metrics"].get("fitted_prompts")) for e in steps])
    show("generation errors:", sorted({str(g["error"]) for g in gens}))
    show("results:", run.results and run.results["results"].get(suite.name))

    assert run.returncode == 0, run.stderr[-4000:]
    assert len(gens) == DOCS * N * T
    failed = [g["error"] for g in gens if g["error"] is not None]
    assert not failed, f"{len(failed)} generations failed, e.g. {failed[0]}"
    # the set-up forces fitting: the problem's chat, the wording and K full candidates overflow
    first = [g for g in gens if g["step"] == 1]
    first_prompt = max(g["prompt_tokens"] for g in first)
    shortest = min(g["completion_tokens"] for g in first)
    assert first_prompt + WORDING + K * shortest > LIMIT, (first_prompt, shortest)
