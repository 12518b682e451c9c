"""`LiteLLMEngine` over a LiteLLM Router, sending straight to the deployments
(`rsa_plugins.engines.router`): the Router's health decisions and cooldowns are kept, retries go
to a healthy deployment, a problem's requests stay on one deployment.  Stub servers on
127.0.0.1 (tests/openai_stub.py); the real vLLM servers are in tests/test_scale_out_real.py."""

from __future__ import annotations

import os

import pytest

from openai_stub import StubServer
from rsa_plugins import Problem, RSAConfig, RSALoop
from rsa_plugins._background import run_sync
from rsa_plugins.engines.litellm import LiteLLMEngine
from rsa_plugins.engines.providers import user_callbacks as _user_callbacks
from rsa_plugins.engines.placement import Placement

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _router(*stubs: StubServer, **settings):
    import litellm

    deployments = [{"model_name": "rsa-model",
                    "litellm_params": {"model": "hosted_vllm/stub", "api_base": s.base_url}}
                   for s in stubs]
    return litellm.Router(model_list=deployments, num_retries=0, **settings)


def _run(engine: LiteLLMEngine, problems: int = 6, population: int = 4, steps: int = 2):
    cfg = RSAConfig(population=population, aggregation_size=2, steps=steps, max_tokens=16,
                    concurrency=8)
    probs = [Problem(f"Problem {i}: 40 + 2?", id=f"p{i}", target="42") for i in range(problems)]
    try:
        return run_sync(RSALoop(engine, cfg, progress=False).run(probs))
    finally:
        run_sync(engine.aclose())


def test_router_requests_go_straight_to_its_deployments():
    with StubServer() as a, StubServer() as b:
        engine = LiteLLMEngine("rsa-model", router=_router(a, b), concurrency=8, timeout=30)
        assert engine.describe()["transport"] == "router-http"
        results = _run(engine)
        assert all(not r.failed and r.usage.failed == 0 for r in results)
        served = [len(a.stats()), len(b.stats())]
        assert sum(served) == 6 * 4 * 2 and min(served) > 0  # both deployments served
        placed = {d["api_base"]: d["placed"] for d in engine.stats()["deployments"]}
        assert placed == {a.base_url: served[0], b.base_url: served[1]}


def test_a_failing_deployment_is_cooled_down_by_the_router_and_retries_go_elsewhere():
    with StubServer(faults={"500": 1.0}) as bad, StubServer() as good:
        router = _router(bad, good, allowed_fails=0, cooldown_time=600)
        engine = LiteLLMEngine("rsa-model", router=router, concurrency=8, timeout=30,
                               backoff=0.01, max_backoff=0.05)
        results = _run(engine)
        assert all(not r.failed and r.usage.failed == 0 for r in results)
        assert len(good.stats()) == 6 * 4 * 2  # every generation was served by the good one
        stats = engine.stats()
        assert stats["cooldowns"] >= 1 and stats["failures_reported"] == len(bad.stats())
        assert len(bad.stats()) <= 8  # no more than were in flight when it was cooled down


def test_a_bad_request_does_not_count_against_the_deployment():
    with StubServer(faults={"400": 1.0}) as stub:
        engine = LiteLLMEngine("rsa-model", router=_router(stub), concurrency=4, timeout=30,
                               max_retries=0)
        results = _run(engine, problems=1, steps=1)
        assert all(r.failed for r in results)
        assert engine.stats()["failures_reported"] == 0


def test_router_transport_litellm_keeps_router_acompletion():
    with StubServer() as stub:
        engine = LiteLLMEngine("rsa-model", router=_router(stub), concurrency=4, timeout=30,
                               transport="litellm")
        assert engine.describe()["transport"] == "litellm" and engine.stats() == {}
        results = _run(engine, problems=1, steps=1)
        assert not results[0].failed and len(stub.stats()) == 4


def test_a_group_with_a_non_openai_deployment_cannot_go_direct():
    import litellm

    router = litellm.Router(model_list=[
        {"model_name": "g", "litellm_params": {"model": "anthropic/claude-x", "api_key": "k"}}])
    assert LiteLLMEngine("g", router=router).describe()["transport"] == "litellm"
    with pytest.raises(ValueError, match="transport='http' with a router"):
        LiteLLMEngine("g", router=router, transport="http")


def test_routing_handlers_are_not_user_callbacks(monkeypatch):
    import litellm
    from litellm.integrations.custom_logger import CustomLogger

    for name in ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                 "_async_failure_callback", "input_callback"):
        monkeypatch.setattr(litellm, name, [], raising=False)
    litellm.Router(model_list=[{"model_name": "g", "litellm_params": {
        "model": "hosted_vllm/x", "api_base": "http://127.0.0.1:9/v1"}}],
        routing_strategy="least-busy")
    assert litellm.callbacks and not _user_callbacks()  # the router's own handler only
    monkeypatch.setattr(litellm, "callbacks", [*litellm.callbacks, CustomLogger()])
    assert _user_callbacks()


def test_placement_moves_a_key_off_a_rank_that_may_not_serve():
    place = Placement(3)
    first = place.pick("p")
    assert place.pick("p") == first  # held while in flight
    elsewhere = place.pick("p", allowed=[r for r in range(3) if r != first])
    assert elsewhere != first and place.pick("p", allowed=[elsewhere]) == elsewhere
    for rank in (first, first, elsewhere, elsewhere):
        place.done(rank, "p")
    assert place.in_flight == [0, 0, 0] and "p" not in place._keys
