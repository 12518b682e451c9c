"""Real-model plumbing: the embedded SmolLM2 checkpoint and vLLM's CPU OpenAI server."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import pytest

from servers import VLLMServer

pytestmark = pytest.mark.real


def test_chat_completion_n4(vllm_server: VLLMServer) -> None:
    """n=4 sampling through LiteLLM's hosted_vllm provider returns 4 choices and token usage."""
    import litellm

    resp = litellm.completion(
        model="hosted_vllm/" + vllm_server.model_name,
        api_base=vllm_server.base_url,
        messages=[{"role": "user", "content": "What is 2 + 3? Answer briefly."}],
        n=4,
        temperature=1.0,
        max_tokens=16,
        timeout=120,
    )
    assert len(resp.choices) == 4
    assert all(isinstance(c.message.content, str) for c in resp.choices)
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.completion_tokens > 0
    assert vllm_server.alive()


def test_checkpoint_is_cached(smollm2_dir: Path) -> None:
    """A second smollm2_checkpoint() returns the same directory without converting again."""
    from rsa_plugins.embedded import _MARKER, smollm2_checkpoint

    marker = smollm2_dir / _MARKER
    before = {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()}
    again = smollm2_checkpoint()
    assert again == smollm2_dir
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == before
    assert marker.is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (again / name).is_file(), name


def test_vllm_dist_metadata() -> None:
    """After ensure_vllm_dist_metadata(), importlib.metadata knows a 'vllm' distribution."""
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("CI"):
            pytest.fail("vllm is not installed")
        pytest.skip("vllm is not installed")
    from rsa_plugins.vllm_cpu import ensure_vllm_dist_metadata

    ensure_vllm_dist_metadata()
    assert ensure_vllm_dist_metadata() is False  # idempotent
    version = importlib.metadata.version("vllm")
    assert version
    if importlib.util.find_spec("lm_eval") is not None:
        import lm_eval.models.vllm_causallms  # noqa: F401  (reads version("vllm") at import)
