"""Data parallelism on vLLM's own engine, without starting one: `AsyncVLLMEngine` over a
stand-in `AsyncLLM` with two engine cores.  Checks where requests go (vLLM's
``data_parallel_rank``): a problem's requests in flight share a core, the cores share the work,
and ``affinity=False`` leaves placement to vLLM.  tests/test_scale_out_real.py runs the real
engine (two vLLM CPU engine cores) through ``lm_eval``."""

from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest

import rsa_plugins
from rsa_plugins import Problem
from rsa_plugins.seeds import derive_seed
from rsa_plugins.validate import ConfigError

pytest.importorskip("vllm")

from rsa_plugins.engines.vllm import AsyncVLLMEngine  # noqa: E402  (needs vllm)

P, N, K, T = 6, 4, 2, 3


class FakeAsyncLLM:
    """`AsyncLLM` look-alike with `cores` engine cores: records each request's pinned rank
    (None when vLLM's balancer would choose) and answers after a random short delay."""

    def __init__(self, cores: int) -> None:
        self.vllm_config = SimpleNamespace(
            parallel_config=SimpleNamespace(data_parallel_size=cores))
        self.model_config = SimpleNamespace(model="fake", max_model_len=4096)
        self.sent: list[tuple[int, int, int | None]] = []  # (problem, seed, rank)
        self.rng = random.Random(0)

    async def generate(self, prompt: Any, sp: Any, request_id: str,
                       **kwargs: Any) -> Any:
        ids = prompt["prompt_token_ids"]
        self.sent.append((ids[0], sp.seed, kwargs.get("data_parallel_rank")))
        await asyncio.sleep(self.rng.random() * 0.01)
        outs = [SimpleNamespace(text=f"<answer>{k}</answer>", token_ids=[1, 2],
                                finish_reason="stop") for k in range(sp.n)]
        yield SimpleNamespace(outputs=outs, num_cached_tokens=len(ids) // 2)

    def shutdown(self) -> None:
        pass


def _engine(cores: int, affinity: bool = True) -> AsyncVLLMEngine:
    def render(messages: list[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def encode(texts: list[str]) -> list[list[int]]:  # token 0 names the problem
        return [[int(re.search(r"PROBLEM-(\d+)", t).group(1)), *range(40)] for t in texts]

    return AsyncVLLMEngine(FakeAsyncLLM(cores), tokenizer=SimpleNamespace(), render=render,
                           encode=encode, affinity=affinity)


def _run(engine: AsyncVLLMEngine) -> list[Any]:
    problems = [Problem(f"PROBLEM-{i}: what is {i} + {i}?", id=f"p{i}", kind="reasoning_gym")
                for i in range(P)]
    return rsa_plugins.run(problems, model=engine, population=N, aggregation_size=K, steps=T,
                           max_tokens=16, progress=False)


def _step_of() -> dict[int, tuple[int, int]]:
    """Request seed -> (problem, step)."""
    return {derive_seed(0, f"p{i}", t, s): (i, t)
            for i in range(P) for t in range(1, T + 1) for s in range(N)}


def test_one_problem_step_goes_to_one_core_and_both_cores_work():
    engine = _engine(2)
    results = _run(engine)
    assert all(len(r.population) == N and not r.failed for r in results)
    fake = engine.llm
    ranks: dict[tuple[int, int], set[int | None]] = defaultdict(set)
    for problem, seed, rank in fake.sent:
        ranks[_step_of()[seed]].add(rank)
    assert len(ranks) == P * T
    assert all(len(r) == 1 and None not in r for r in ranks.values()), ranks
    stats = engine.stats()
    assert sum(stats["placed"]) == len(fake.sent) == P * (1 + N * (T - 1))
    assert all(n > 0 for n in stats["placed"])
    assert engine.describe()["data_parallel_size"] == 2 and engine.describe()["affinity"]
    assert stats["prefix_hit_rate_per_problem"]["problems"] == P
    assert stats["busy"]["requests"] == len(fake.sent) and stats["busy"]["in_flight_max"] > N


def test_without_affinity_vllm_places_every_request():
    engine = _engine(2, affinity=False)
    _run(engine)
    assert {rank for _, _, rank in engine.llm.sent} == {None}
    assert "placed" not in engine.stats()


def test_one_core_pins_nothing():
    engine = _engine(1)
    _run(engine)
    assert {rank for _, _, rank in engine.llm.sent} == {None}
    assert engine.placement is None


@pytest.mark.parametrize("value", [0, -1, "two", 1.5])
def test_bad_data_parallel_size_names_the_parameter(value):
    from rsa_plugins.adapters.lm_eval.vllm import RSAVLLM

    with pytest.raises(ConfigError, match=r"data_parallel_size must be an integer >= 1"):
        RSAVLLM(pretrained="/nonexistent", data_parallel_size=value, population=4)
