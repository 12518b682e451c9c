"""The async engine gets the offline engine's scheduler budget, and both report what vLLM runs
them with (`engine_settings`).

vLLM picks `max_num_batched_tokens` and `max_num_seqs` (and from them the CUDA-graph sizes) by
usage context: `vllm.LLM` gets a larger budget than an `AsyncLLM` built from `AsyncEngineArgs`.
These tests build vLLM's real config (CPU build, SmolLM2's checkpoint) without starting an
engine; tests/benchmarks/test_bench_rsa_bench.py checks the started engines agree.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from rsa_plugins.engines.vllm_base import differing_settings, engine_settings


@pytest.fixture(scope="module")
def vllm_config(smollm2_dir):
    """config(context, **engine args) -> vLLM's VllmConfig, as its engines would build it."""
    from rsa_plugins.embedded import cpu_env

    os.environ.update(cpu_env())
    from vllm import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    def config(context: str, **options):
        args = AsyncEngineArgs(model=str(smollm2_dir), max_model_len=2048, dtype="float32",
                               **options)
        return args.create_engine_config(getattr(UsageContext, context))

    return config


def test_async_engine_is_built_in_the_offline_usage_context(monkeypatch, smollm2_dir):
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    from rsa_plugins.engines.vllm import build_async_llm

    seen = {}

    def from_engine_args(engine_args, **kw):
        seen.update(args=engine_args, **kw)
        return SimpleNamespace()

    monkeypatch.setattr(AsyncLLM, "from_engine_args", staticmethod(from_engine_args))
    build_async_llm(str(smollm2_dir), {"max_num_seqs": 48, "dtype": "float32"})
    assert seen["usage_context"] == UsageContext.LLM_CLASS  # what vllm.LLM uses
    assert seen["args"].max_num_seqs == 48 and seen["args"].max_num_batched_tokens is None


def test_offline_context_gives_the_offline_budget_and_keeps_what_the_user_set(vllm_config):
    offline = engine_settings(vllm_config("LLM_CLASS"))
    engine = engine_settings(vllm_config("ENGINE_CONTEXT"))
    # why it matters: vLLM's engine context gives a smaller budget than the offline one
    assert engine["max_num_batched_tokens"] < offline["max_num_batched_tokens"]
    assert engine["max_num_seqs"] < offline["max_num_seqs"]
    assert differing_settings({"lockstep": offline, "barrier-free": engine}).keys() >= {
        "max_num_batched_tokens", "max_num_seqs"}
    mine = engine_settings(vllm_config("LLM_CLASS", max_num_seqs=64,
                                       max_num_batched_tokens=8192))
    assert (mine["max_num_seqs"], mine["max_num_batched_tokens"]) == (64, 8192)


def test_settings_read_back_from_the_config(vllm_config):
    s = engine_settings(vllm_config("LLM_CLASS", enforce_eager=True, gpu_memory_utilization=0.5))
    assert s["max_model_len"] == 2048 and s["dtype"] == "float32" and s["enforce_eager"] is True
    assert s["gpu_memory_utilization"] == 0.5 and s["enable_prefix_caching"] is True
    assert s["tensor_parallel_size"] == 1 and s["data_parallel_size"] == 1
    assert isinstance(s["max_num_batched_tokens"], int) and s["vllm"]


def test_a_config_without_a_field_leaves_it_out():
    config = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=8),
                             compilation_config=SimpleNamespace(cudagraph_capture_sizes=[1, 2, 4]))
    s = engine_settings(config)
    assert s["max_num_seqs"] == 8 and s["max_cudagraph_capture_size"] == 4
    assert "max_num_batched_tokens" not in s and "dtype" not in s


def test_only_settings_that_change_speed_are_compared():
    same = {"max_num_seqs": 1024, "num_gpu_blocks": 7}
    assert differing_settings({"a": same, "b": {**same, "num_gpu_blocks": 9}}) == {}
    assert differing_settings({"a": same, "b": {"num_gpu_blocks": 7}}) == {
        "max_num_seqs": {"a": 1024, "b": None}}


def test_the_cheap_prompt_bound_holds_for_text_of_many_bytes(smollm2_dir):
    from transformers import AutoTokenizer

    from rsa_plugins.engines.vllm_base import _VLLMPrompts
    from rsa_plugins.types import Request

    class Prompts(_VLLMPrompts):
        async def generate(self, requests):
            return []

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    engine = Prompts()
    engine._setup(tok, None, None, None, None, None, None, None, None, None)
    text = "日本語の問題です。答えは？ " * 20
    req = Request(messages=[{"role": "user", "content": text}], seed=0, chat=False)
    exact = len(engine.encode([engine.render(req)])[0])
    assert exact > len(text)  # characters are no upper bound of tokens here
    assert engine.prompt_tokens_bound(req) >= exact
