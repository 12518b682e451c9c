"""The LiteLLM engine: a scripted CustomLLM provider, and a loopback OpenAI-compatible stub."""

from __future__ import annotations

import asyncio
import os

import pytest

from fakes import make_fake_llm
from openai_stub import StubServer
import rsa_plugins
from rsa_plugins import Problem, Request
from rsa_plugins._background import run_sync
from rsa_plugins.engines.errors import FatalAPIError
from rsa_plugins.engines.errors import _retry_after, is_retryable
from rsa_plugins.engines.litellm import LiteLLMEngine

PROMPTS = ["Compute 6*7. Put the answer in \\boxed{}.", "Compute 40+2. Put the answer in \\boxed{}."]


@pytest.fixture
def fake_llm():
    import litellm

    saved = list(litellm.custom_provider_map)
    handler = make_fake_llm(delay=0.01)
    yield handler
    litellm.custom_provider_map = saved


def test_run_through_litellm_makes_n_times_t_calls_with_distinct_seeds(fake_llm):
    results = rsa_plugins.run(PROMPTS, model="fakellm/m", population=4, aggregation_size=2,
                              steps=3, seed=1, use_n=False, progress=False)
    assert len(results) == 2
    assert len(fake_llm.calls) == 2 * 4 * 3
    seeds = [c["seed"] for c in fake_llm.calls]
    assert len(set(seeds)) == len(seeds)
    for res in results:
        assert [m["population"] for m in res.steps] == [4, 4, 4]
        assert res.usage.completion_tokens > 0 and res.usage.prompt_tokens > 0
        assert res.answer in {"42", "41", "7"}
    # identical first-step prompts were not collapsed by any cache: the texts differ
    first = [c for c in fake_llm.calls if "Solution 1" not in c["messages"][-1]["content"]]
    assert len({str(c["seed"]) for c in first}) == len(first) == 8


def test_single_problem_returns_one_result_and_list_returns_list(fake_llm):
    one = rsa_plugins.run(PROMPTS[0], model="fakellm/m", population=2, aggregation_size=1,
                          steps=1, progress=False)
    assert isinstance(one, rsa_plugins.RSAResult)
    many = rsa_plugins.run(PROMPTS[:1], model="fakellm/m", population=2, aggregation_size=1,
                           steps=1, progress=False)
    assert isinstance(many, list) and len(many) == 1


def test_first_step_uses_n_when_asked(fake_llm):
    rsa_plugins.run(PROMPTS[0], model="fakellm/m", population=4, aggregation_size=2, steps=2,
                    use_n=True, progress=False)
    ns = [c["n"] for c in fake_llm.calls]
    assert ns.count(4) == 1 and ns.count(1) == 4 and len(ns) == 5


def test_arun_inside_a_running_loop(fake_llm):
    async def main():
        return await rsa_plugins.arun(PROMPTS, model="fakellm/m", population=3,
                                      aggregation_size=2, steps=2, progress=False)

    results = asyncio.run(main())
    assert [len(r.population) for r in results] == [3, 3]


def test_bad_model_string_is_a_clear_error():
    with pytest.raises(ValueError, match="provider"):
        LiteLLMEngine("no-such-model-xyz")
    with pytest.raises(ValueError, match="model is required"):
        rsa_plugins.run("q", model=None)


@pytest.fixture(params=["http", "litellm"])
def transport(request):
    """Both transports of the engine: direct HTTP and litellm.acompletion."""
    return request.param


def _engine(stub: StubServer, transport: str, **kw) -> LiteLLMEngine:
    kw.setdefault("backoff", 0.01)
    eng = LiteLLMEngine("hosted_vllm/stub", api_base=stub.base_url, timeout=10,
                        transport=transport, **kw)
    assert eng.describe()["transport"] == transport
    return eng


def _one(engine: LiteLLMEngine, n: int = 1):
    req = Request(messages=[{"role": "user", "content": "hi"}], seed=3, n=n, max_tokens=8)
    return run_sync(engine.generate([req]))[0]


def test_retries_429_and_5xx_and_malformed_then_succeeds(transport):
    with StubServer(["429:0", "500", "503", "malformed", "empty"]) as stub:
        (comp,) = _one(_engine(stub, transport))
        seen = stub.stats()
    assert comp.ok and "42" in comp.text and comp.retries == 5
    assert [s["behaviour"] for s in seen] == ["429:0", "500", "503", "malformed", "empty", "ok"]


def test_retry_after_is_respected(transport):
    with StubServer(["429:1"]) as stub:
        (comp,) = _one(_engine(stub, transport, backoff=0.001))
        seen = stub.stats()
    assert comp.ok and comp.retries == 1
    assert seen[1]["t"] - seen[0]["t"] >= 0.9, "the client must wait as long as Retry-After says"


def test_client_errors_are_not_retried_and_become_failed_completions(transport):
    with StubServer(["400"]) as stub:
        (comp,) = _one(_engine(stub, transport))
        seen = stub.stats()
    assert not comp.ok and "400" in comp.error and len(seen) == 1


def test_gives_up_after_max_retries_without_raising(transport):
    with StubServer(["500"] * 10) as stub:
        (comp,) = _one(_engine(stub, transport, max_retries=2))
        seen = stub.stats()
    assert not comp.ok and comp.retries == 2 and len(seen) == 3


def test_n_choices_split_usage_and_are_topped_up(transport):
    with StubServer() as stub:
        comps = _one(_engine(stub, transport, use_n=True), n=3)
        seen = stub.stats()
    assert len(comps) == 3 and len(seen) == 1 and seen[0]["n"] == 3
    assert sum(c.completion_tokens for c in comps) == 24
    assert sum(c.prompt_tokens for c in comps) == 10


def test_concurrency_is_bounded_and_keys_stay_out_of_errors(transport):
    secret = "sk-test-SECRET-0123456789"
    with StubServer(["401"]) as stub:
        eng = _engine(stub, transport, api_key=secret, concurrency=2)
        with pytest.raises(FatalAPIError) as refused:  # a refused key stops the run, unretried
            _one(eng)
        seen = stub.stats()
    assert len(seen) == 1 and seen[0]["auth"].endswith(secret), "the key is sent, once"
    assert "401" in str(refused.value) and secret not in str(refused.value)
    assert secret not in str(eng.describe())


def test_rsa_over_the_stub_counts_every_generation(transport):
    with StubServer(["500", "429:0"]) as stub:
        res = rsa_plugins.run([Problem("What is 6*7?", target="42")] * 2, model="hosted_vllm/stub",
                              api_base=stub.base_url, population=3, aggregation_size=2, steps=2,
                              backoff=0.01, transport=transport, progress=False)
        seen = stub.stats()
    ok = [s for s in seen if s["behaviour"] == "ok"]
    assert sum(s["n"] or 1 for s in ok) == 2 * 3 * 2, "N x T generations per problem"
    assert len(seen) == 2 * (1 + 3) + 2, "hosted_vllm takes n=N at the first step; 2 retries"
    assert sum(r.usage.retries for r in res) == 2
    assert all(r.answer == "42" and r.correct for r in res)
    assert all(r.steps[-1]["mean_accuracy"] == 1.0 for r in res)


def test_retry_classification():
    import litellm

    assert is_retryable(litellm.RateLimitError("x", llm_provider="openai", model="m"))
    assert not is_retryable(litellm.BadRequestError("x", llm_provider="openai", model="m"))

    class WithHeaders(Exception):
        litellm_response_headers = {"retry-after": "7"}

    assert _retry_after(WithHeaders()) == 7.0
    assert os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP") == "True"
