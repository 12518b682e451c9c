"""Load: 1,000 problems x N=16 x T=3 against an instant local server.

Prints throughput and peak memory; asserts that every generation was made, that requests in
flight and client connections (all of them, over the whole run) never exceeded the concurrency
setting, and that the trace was streamed to disk.
"""

from __future__ import annotations

import json
import resource
import time
import tracemalloc

from openai_stub import StubServer  # noqa: E402
import rsa_plugins  # noqa: E402
from rsa_plugins import Problem  # noqa: E402
from rsa_plugins.trace import load  # noqa: E402

PROBLEMS, N, T, CONCURRENCY = 1000, 16, 3, 48


def test_thousand_problems(tmp_path, show):
    problems = [Problem(f"Problem {i}: what is 40 + 2? Answer as ANSWER: <n>.", target="42")
                for i in range(PROBLEMS)]
    trace = tmp_path / "load.jsonl"
    with StubServer() as stub:
        tracemalloc.start()
        t0 = time.perf_counter()
        results = rsa_plugins.run(problems, model="hosted_vllm/stub", api_base=stub.base_url,
                                  population=N, aggregation_size=4, steps=T, max_tokens=16,
                                  concurrency=CONCURRENCY, use_n=False, trace=trace,
                                  progress=False)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        server = stub.peak()
    gens = PROBLEMS * N * T
    show(f"\n{gens} generations in {elapsed:.1f} s ({gens / elapsed:.0f} gen/s); "
          f"peak traced memory {peak / 2**20:.1f} MiB; process max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          f"trace {trace.stat().st_size / 2**20:.1f} MiB; server saw at most "
          f"{server['max_in_flight']} requests at once over {server['connections']} connections")
    assert server["requests"] == gens
    assert server["max_in_flight"] <= CONCURRENCY
    assert server["connections"] <= CONCURRENCY, "connections are bounded and reused"
    assert all(len(r.steps) == T and r.answer == "42" for r in results)
    events = load(trace)
    assert sum(1 for e in events if e["event"] == "generation") == gens
    assert json.dumps(results[0].steps[-1])
