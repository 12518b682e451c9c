"""Several servers behind one endpoint: vLLM's router (the Rust ``vllm-router`` package) in
front of two OpenAI-compatible stub servers, and RSA through ``hosted_vllm/`` pointed at the
router, as docs/scale-out.md describes for several machines.  With ``--policy consistent_hash``
and ``session_header="x-session-id"`` every problem's requests land on one server (its prompts share a
prefix that server has cached); with the prefix-aware ``cache_aware`` policy the client sends
nothing extra.  The GPU side (vLLM servers on several machines) is not run here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest

from openai_stub import StubServer
from rsa_plugins import Problem
from rsa_plugins.seeds import derive_seed
from servers import free_port, stop_process, wait_http

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROUTER = shutil.which("vllm-router") or os.path.join(os.path.dirname(sys.executable), "vllm-router")
pytestmark = pytest.mark.skipif(not os.path.exists(ROUTER), reason="vllm-router not installed")

PROBLEMS = [Problem(f"Problem {i}: " + "some shared context " * 30 + "what is 40 + 2?",
                    id=f"p{i}", target="42") for i in range(8)]


def _rsa_through_router(policy: str, **options):
    """RSA (N=4, T=3) through vllm-router with `policy` in front of two stubs: the results and,
    per problem, which stub served each of its requests."""
    import rsa_plugins

    with StubServer() as a, StubServer() as b:
        port = free_port()
        cmd = [ROUTER, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
               "--worker-urls", a.base_url.removesuffix("/v1"), b.base_url.removesuffix("/v1")]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_http(f"http://127.0.0.1:{port}/v1/models", 60, 0.2), "router did not start"
            results = rsa_plugins.run(PROBLEMS, model="hosted_vllm/stub",
                                      api_base=f"http://127.0.0.1:{port}/v1", population=4,
                                      aggregation_size=2, steps=3, max_tokens=16,
                                      progress=False, use_n=False, **options)
            owner = {derive_seed(0, p.id, t, s): p.id for p in PROBLEMS for t in (1, 2, 3)
                     for s in range(4)}
            served: dict[str, set[str]] = defaultdict(set)
            counts = {}
            for name, stub in (("a", a), ("b", b)):
                log = stub.stats()
                counts[name] = len(log)
                for entry in log:
                    served[owner[entry["seed"]]].add(name)
        finally:
            stop_process(proc)
    return results, served, counts


def test_consistent_hash_on_a_session_header_keeps_each_problem_on_one_server():
    results, served, counts = _rsa_through_router("consistent_hash",
                                                  session_header="x-session-id")
    assert all(not r.failed and r.usage.failed == 0 for r in results)
    assert sum(counts.values()) == 8 * 4 * 3
    assert all(len(servers) == 1 for servers in served.values())  # one server per problem
    assert counts["a"] > 0 and counts["b"] > 0  # and problems spread over both


def test_a_prefix_aware_router_needs_nothing_from_the_client():
    results, served, counts = _rsa_through_router("cache_aware")
    assert all(not r.failed and r.usage.failed == 0 for r in results)
    assert sum(counts.values()) == 8 * 4 * 3 and set(served) == {p.id for p in PROBLEMS}


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_session_header_goes_with_every_request(transport):
    import rsa_plugins

    with StubServer() as stub:
        rsa_plugins.run(PROBLEMS[:2], model="hosted_vllm/stub", api_base=stub.base_url,
                        population=2, aggregation_size=2, steps=2, max_tokens=8,
                        progress=False, use_n=False, transport=transport,
                        session_header="X-Session-ID")
        sessions = {e["session"] for e in stub.stats()}
    assert sessions == {"p0", "p1"}  # every request carried its problem's id
