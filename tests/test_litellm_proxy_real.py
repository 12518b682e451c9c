"""``rsa/hosted_vllm/...`` served by LiteLLM's proxy in front of a real model (SmolLM2-135M on
vLLM's CPU server), queried with the stock ``openai`` client."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("backoff")  # a proxy dependency litellm itself does not install

from litellm_proxy import LiteLLMProxy  # noqa: E402

pytestmark = pytest.mark.real

QUESTION = "What is 3 + 4? Put the final answer in \\boxed{}."


def generated_tokens(base_url: str) -> float:
    """vLLM's counter of generated tokens (its Prometheus ``/metrics``)."""
    text = urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=30).read()
    found = re.findall(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", text.decode(),
                       re.M)
    return sum(float(x) for x in found)


def test_rsa_through_the_proxy_on_smollm2(vllm_server, show):
    entry = {"model_name": "rsa-smollm2", "litellm_params": {
        "model": f"rsa/hosted_vllm/{vllm_server.model_name}", "api_base": vllm_server.base_url,
        "rsa": {"population": 4, "aggregation_size": 2, "steps": 3, "max_tokens": 96}}}
    with LiteLLMProxy({"model_list": [entry]}) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=proxy.key, max_retries=0,
                               timeout=1200)
        before = generated_tokens(vllm_server.base_url)
        started = time.monotonic()
        r = client.chat.completions.create(model="rsa-smollm2", seed=0,
                                           messages=[{"role": "user", "content": QUESTION}])
        seconds = time.monotonic() - started
        generated = generated_tokens(vllm_server.base_url) - before
    fields = r.choices[0].message.model_extra["provider_specific_fields"]["rsa"]
    show(f"\n[rsa via LiteLLM proxy, SmolLM2-135M on vLLM CPU] N=4 K=2 T=3: "
         f"{fields['generations']} generations in {seconds:.1f} s; answer {fields['answer']!r}, "
         f"votes {fields['votes']}; usage {r.usage.prompt_tokens} prompt + "
         f"{r.usage.completion_tokens} completion tokens (vLLM counted {generated:.0f} "
         f"generated)\n--- answer text ---\n{r.choices[0].message.content}\n---")
    assert fields["applied"] and fields["generations"] == 4 * 3
    assert len(fields["population"]) == 4 and len(fields["steps"]) == 3
    assert all(len(m["parents"]) == 2 for m in fields["population"])  # last step: aggregations
    steps = fields["steps"]
    assert r.usage.prompt_tokens == sum(m["prompt_tokens"] for m in steps) > 0
    assert r.usage.completion_tokens == sum(m["completion_tokens"] for m in steps) > 0
    assert r.usage.completion_tokens == generated  # every generated token, and no other
    assert steps[1]["prompt_tokens"] > steps[0]["prompt_tokens"]  # candidates in the prompts
    assert r.choices[0].message.content == fields["population"][fields["chosen"]]["text"]
