"""Benchmark: the RSA loop over the LiteLLM engine vs. a raw async HTTP client.

Both send the same requests (the bodies RSA produced, replayed) at the same concurrency to an
instant-answer OpenAI-compatible server on 127.0.0.1 running in another process, so the figure
is the client-side cost of RSA's scheduling plus LiteLLM.  It prints ratios, measured in one
process one after the other; it asserts behaviour only (same work done on both sides).

    pytest tests/benchmarks/test_bench_litellm.py -s          # or: python tests/benchmarks/...
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
from collections.abc import Sequence

import pytest

from openai_stub import StubServer  # noqa: E402
from rsa_plugins import RSALoop, Problem, RSAConfig  # noqa: E402
from rsa_plugins._background import run_sync  # noqa: E402
from rsa_plugins.engines.litellm import LiteLLMEngine  # noqa: E402
from rsa_plugins.types import Completion, Request  # noqa: E402

CONCURRENCY = 32


class Recording(LiteLLMEngine):
    """The LiteLLM engine, keeping every request body it sent."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.sent: list[dict] = []

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        for r in requests:
            self.sent.append({"messages": r.messages, "seed": r.seed, "n": r.n,
                              "max_tokens": r.max_tokens, "temperature": r.temperature})
        return await super().generate(requests)


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


def measure_throughput(transport: str, n_problems: int = 32, population: int = 8, steps: int = 4,
                       rounds: int = 3) -> dict[str, float]:
    cfg = RSAConfig(population=population, aggregation_size=4, steps=steps, max_tokens=16,
                    concurrency=CONCURRENCY)
    with StubServer() as stub:
        rsa_times, raw_times, gens = [], [], 0
        for _ in range(rounds):  # alternate so drift on a noisy machine hits both sides
            eng = Recording("hosted_vllm/stub", api_base=stub.base_url, concurrency=CONCURRENCY,
                            use_n=False, timeout=30, transport=transport)
            t0 = time.perf_counter()
            results = run_sync(RSALoop(eng, cfg, progress=False).run(problems(n_problems)))
            rsa_times.append(time.perf_counter() - t0)
            run_sync(eng.aclose())
            gens = sum(r.usage.calls - r.usage.failed for r in results)
            t0 = time.perf_counter()
            got = asyncio.run(raw_client(stub.base_url, eng.sent, CONCURRENCY))
            raw_times.append(time.perf_counter() - t0)
            assert got == gens == n_problems * population * steps
    rsa, raw = min(rsa_times), min(raw_times)
    return {"generations": gens, "rsa_s": rsa, "raw_s": raw,
            "rsa_gen_per_s": gens / rsa, "raw_gen_per_s": gens / raw, "throughput_ratio": raw / rsa}


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


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_rsa_over_litellm_vs_raw_http(transport, show):
    fig = measure_throughput(transport)
    show(f"\nRSA over the LiteLLM engine (transport={transport}) vs raw aiohttp, same requests, "
          f"concurrency {CONCURRENCY}")
    show(json.dumps({k: round(v, 3) for k, v in fig.items()}, indent=1))
    assert fig["generations"] == 32 * 8 * 4


def test_peak_memory_flat_in_steps(show):
    mem = peak_memory()
    show("\npeak traced memory (MiB) at N=64 by T:", {t: round(m, 2) for t, m in mem.items()})
    show(f"ratio T=20 / T=5: {mem[20] / mem[5]:.2f}")
    assert set(mem) == {5, 10, 20}


if __name__ == "__main__":
    test_rsa_over_litellm_vs_raw_http("http", print)
    test_rsa_over_litellm_vs_raw_http("litellm", print)
    test_peak_memory_flat_in_steps(print)
