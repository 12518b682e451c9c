"""Real model (issue 22, item 4): ``--tasks gsm8k,arc_easy`` through ``rsa-litellm`` on
SmolLM2-135M served by vLLM's CPU build.  The multiple-choice task's log-likelihoods come from
the server's prompt log-probabilities and equal, request for request, what lm-eval's own
``local-completions`` computes on the same server; the generative task runs RSA."""

from __future__ import annotations

from typing import Any

import pytest

from test_mixed_runs import tasks

pytestmark = pytest.mark.real

N, K, T = 2, 2, 1


def loglikelihoods(results: dict[str, Any], task: str) -> list[float]:
    return [round(float(r[0]), 3) for s in results["samples"][task] for r in s["filtered_resps"]]


def test_rsa_litellm_scores_log_likelihoods_like_local_completions(vllm_server, tmp_path,
                                                                   monkeypatch):
    import lm_eval

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    manager = tasks(tmp_path)
    common = {"task_manager": manager, "bootstrap_iters": 0, "log_samples": True}
    base = vllm_server.base_url
    mixed = lm_eval.simple_evaluate(
        model="rsa-litellm", tasks=["local_gsm8k", "local_arc_easy"],
        model_args={"model": f"hosted_vllm/{vllm_server.model_name}", "api_base": base,
                    "population": N, "aggregation_size": K, "steps": T, "max_tokens": 48,
                    "tokenizer_backend": "huggingface",
                    "tokenizer": str(vllm_server.model_dir)}, **common)
    plain = lm_eval.simple_evaluate(
        model="local-completions", tasks=["local_arc_easy"],
        model_args={"model": vllm_server.model_name, "base_url": f"{base}/completions",
                    "tokenizer_backend": "huggingface", "tokenizer": str(vllm_server.model_dir)},
        **common)
    got, expected = loglikelihoods(mixed, "local_arc_easy"), loglikelihoods(plain, "local_arc_easy")
    assert got == expected and len(got) == 3 * 4
    assert mixed["results"]["local_arc_easy"]["acc,none"] == plain["results"]["local_arc_easy"]["acc,none"]
    info = mixed["config"]["rsa"]
    assert info["runs"][0]["task"] == "local_gsm8k" and info["steps"][0]["population"] == 2 * N
