"""Long candidates against a real server: fitted into the context, never rejected."""

from __future__ import annotations

import pytest

import rsa_plugins
from rsa_plugins import Problem, Request
from rsa_plugins._background import run_sync
from rsa_plugins.engines.litellm import LiteLLMEngine

pytestmark = pytest.mark.real


def test_engine_learns_the_context_and_counts_exactly(vllm_server):
    eng = LiteLLMEngine(f"hosted_vllm/{vllm_server.model_name}", api_base=vllm_server.base_url)

    async def probe():
        await eng.prepare()
        short = await eng.prompt_tokens(Request([{"role": "user", "content": "hi"}], seed=0))
        longer = await eng.prompt_tokens(Request([{"role": "user", "content": "hi " * 50}], seed=0))
        await eng.aclose()
        return short, longer

    short, longer = run_sync(probe())
    assert eng.max_model_len == 2048
    assert 0 < short < longer and longer - short >= 40  # the chat template is counted too


def test_long_candidates_are_fitted_and_never_rejected(vllm_server):
    # K=3 candidates of ~700 tokens each cannot fit a 2048-token context as they are
    (res,) = rsa_plugins.run(
        [Problem("Tell a long story about a lighthouse keeper. End with ANSWER: done")],
        model=f"hosted_vllm/{vllm_server.model_name}", api_base=vllm_server.base_url,
        population=3, aggregation_size=3, steps=2, max_tokens=700,
        sampling={"ignore_eos": True}, progress=False)
    first, second = res.steps
    assert first["failed"] == 0 and first["completion_tokens"] >= 3 * 690
    assert second["fitted_prompts"] == 3, "every aggregation prompt had to be fitted"
    assert second["failed"] == 0, "the server rejected no request"
    for cand in res.population:
        assert cand.completion.prompt_tokens + cand.completion.completion_tokens <= 2048
