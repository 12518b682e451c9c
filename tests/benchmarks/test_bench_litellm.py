"""Benchmark: the RSA loop over the LiteLLM engine vs. a raw async HTTP client.

Both send the same requests (the bodies RSA produced, replayed) at the same concurrency to an
instant-answer OpenAI-compatible server on 127.0.0.1 running in another process, so the figure
is the client-side cost of RSA's scheduling plus the transport: the direct HTTP transport
(``direct``), a LiteLLM Router over the direct transport (``router``, one deployment: the same
server) and ``litellm.acompletion`` (``litellm``).  Rounds alternate the clients, so drift on a
noisy machine hits all alike; it prints each client's throughput over the raw client's, the
median of the rounds (``direct/raw``, ``router/raw``: goals 0.9 and 0.5), and each client's
CPU time per generation in this process (``*_cpu_us``: the stub runs elsewhere).  It asserts
behaviour only (the same work done on every side).

    pytest tests/benchmarks/test_bench_litellm.py -s          # or: python tests/benchmarks/...
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Sequence

import pytest

from openai_stub import StubServer
from rsa_plugins import RSALoop, Problem, RSAConfig
from rsa_plugins._background import run_sync
from rsa_plugins.engines.litellm import LiteLLMEngine
from rsa_plugins.types import Completion, Request

CONCURRENCY = 32


class Recording(LiteLLMEngine):
    """The LiteLLM engine, keeping every request it sent (`bodies()` after the timing)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.sent: list[Request] = []

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        self.sent.extend(requests)
        return await super().generate(requests)

    def bodies(self) -> list[dict]:
        return [{"messages": r.messages, "seed": r.seed, "n": r.n, "max_tokens": r.max_tokens,
                 "temperature": r.temperature} for r in self.sent]


async def raw_client(base_url: str, bodies: list[dict], concurrency: int) -> int:
    """Send `bodies` with aiohttp behind a semaphore; return the completions received."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    got = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def one(body: dict) -> None:
            nonlocal got
            async with sem:
                async with s.post(f"{base_url}/chat/completions",
                                  json={"model": "stub", **body}) as resp:
                    got += len((await resp.json())["choices"])

        await asyncio.gather(*(one(b) for b in bodies))
    return got


def problems(count: int) -> list[Problem]:
    return [Problem(f"Problem {i}: what is 40 + 2? Answer with ANSWER: <n>.", target="42")
            for i in range(count)]


def _engine(client: str, base_url: str) -> Recording:
    if client == "router":
        import litellm

        router = litellm.Router(model_list=[{"model_name": "rsa-model", "litellm_params": {
            "model": "hosted_vllm/stub", "api_base": base_url}}], num_retries=0)
        return Recording("rsa-model", router=router, concurrency=CONCURRENCY, timeout=30)
    return Recording("hosted_vllm/stub", api_base=base_url, concurrency=CONCURRENCY,
                     use_n=False, timeout=30,
                     transport="http" if client == "direct" else "litellm")


def measure_throughput(clients: Sequence[str] = ("direct", "router"), n_problems: int = 32,
                       population: int = 8, steps: int = 4, rounds: int = 5) -> dict[str, float]:
    """Throughput of each RSA client over the raw client's (median of `rounds` rounds, each
    round every client once, then the raw client on the bodies RSA sent)."""
    cfg = RSAConfig(population=population, aggregation_size=4, steps=steps, max_tokens=16,
                    concurrency=CONCURRENCY)
    want = n_problems * population * steps
    times: dict[str, list[float]] = {c: [] for c in (*clients, "raw")}
    cpu: dict[str, list[float]] = {c: [] for c in (*clients, "raw")}
    with StubServer() as stub:
        bodies: list[dict] = []
        for r in range(rounds + 1):  # round 0 warms clients, caches and imports up
            for client in clients:
                eng = _engine(client, stub.base_url)
                assert eng.describe()["transport"] == {"direct": "http", "router": "router-http",
                                                       "litellm": "litellm"}[client]
                t0, c0 = time.perf_counter(), time.process_time()
                results = run_sync(RSALoop(eng, cfg, progress=False).run(problems(n_problems)))
                wall, used = time.perf_counter() - t0, time.process_time() - c0
                run_sync(eng.aclose())
                assert sum(r.usage.calls - r.usage.failed for r in results) == want
                if r:
                    times[client].append(wall)
                    cpu[client].append(used)
                bodies = eng.bodies()
            t0, c0 = time.perf_counter(), time.process_time()
            got = asyncio.run(raw_client(stub.base_url, bodies, CONCURRENCY))
            if r:
                times["raw"].append(time.perf_counter() - t0)
                cpu["raw"].append(time.process_time() - c0)
            assert got == want
    out: dict[str, float] = {"generations": want, "rounds": rounds,
                             "raw_gen_per_s": want / statistics.median(times["raw"])}
    for client, used in cpu.items():
        out[f"{client}_cpu_us"] = statistics.median(used) / want * 1e6
    for client in clients:
        ratios = [raw / mine for raw, mine in zip(times["raw"], times[client])]
        out[f"{client}_gen_per_s"] = want / statistics.median(times[client])
        out[f"{client}/raw"] = statistics.median(ratios)
        out[f"{client}/raw_min"], out[f"{client}/raw_max"] = min(ratios), max(ratios)
    return out


def peak_memory(population: int = 64, steps_list: Sequence[int] = (5, 10, 20)) -> dict[int, float]:
    """Peak traced Python memory (MiB) of one RSA run per T, N fixed."""
    out = {}
    with StubServer() as stub:
        for steps in steps_list:
            eng = LiteLLMEngine("hosted_vllm/stub", api_base=stub.base_url, concurrency=CONCURRENCY,
                                use_n=False, timeout=30)
            cfg = RSAConfig(population=population, aggregation_size=4, steps=steps, max_tokens=16,
                            concurrency=CONCURRENCY)
            run_sync(RSALoop(eng, cfg, progress=False).run(problems(1)))  # warm clients and caches
            run_sync(eng.aclose())
            gc.collect()
            tracemalloc.start()
            res = run_sync(RSALoop(eng, cfg, progress=False).run(problems(2)))
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            run_sync(eng.aclose())
            assert all(len(r.steps) == steps for r in res)
            out[steps] = peak / 2**20
    return out


def test_rsa_direct_and_router_vs_raw_http(show):
    fig = measure_throughput(("direct", "router"))
    show(f"\nRSA over the direct HTTP transport and over a LiteLLM Router (direct) vs raw "
         f"aiohttp, same requests, concurrency {CONCURRENCY}, median of {fig['rounds']} rounds "
         "(goals: direct/raw >= 0.9, router/raw >= 0.5)")
    show(json.dumps({k: round(v, 3) for k, v in fig.items()}, indent=1))
    assert fig["generations"] == 32 * 8 * 4 and fig["direct/raw"] > 0 and fig["router/raw"] > 0


@pytest.mark.slow  # a figure of the docs; the direct and Router figures above run by default
def test_rsa_over_litellm_acompletion_vs_raw_http(show):
    fig = measure_throughput(("litellm",), rounds=2)
    show(f"\nRSA through litellm.acompletion vs raw aiohttp, concurrency {CONCURRENCY}")
    show(json.dumps({k: round(v, 3) for k, v in fig.items()}, indent=1))
    assert fig["generations"] == 32 * 8 * 4 and fig["litellm/raw"] > 0


def test_peak_memory_flat_in_steps(show):
    mem = peak_memory()
    show("\npeak traced memory (MiB) at N=64 by T:", {t: round(m, 2) for t, m in mem.items()})
    show(f"ratio T=20 / T=5: {mem[20] / mem[5]:.2f}")
    assert set(mem) == {5, 10, 20}


if __name__ == "__main__":
    test_rsa_direct_and_router_vs_raw_http(print)
    test_rsa_over_litellm_acompletion_vs_raw_http(print)
    test_peak_memory_flat_in_steps(print)
