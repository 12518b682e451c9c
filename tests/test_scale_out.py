"""Data-parallel ``rsa-vllm`` (``data_parallel_size > 1``) with a scripted stand-in for ``vllm.LLM``.

The replicas are real worker processes (spawned, as in production) holding an ``RSAVLLM`` whose
``vllm.LLM`` is `FakeLLM`: replies are pure functions of (prompt tokens, seed, choice), so a
data-parallel run must give exactly the single-replica answers.  The real-model version is
``tests/test_scale_out_real.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest

from rsa_plugins.adapters.lm_eval.replicas import (ReplicaError, ReplicaPool, cpu_binds, gpu_groups,
                                            shard_by_key)
from rsa_plugins.config import ConfigError

try:  # lm-eval's vLLM module imports vllm; the tests below that need it use `smollm2_dir`
    from lm_eval.models import vllm_causallms

    from rsa_plugins.adapters.lm_eval.vllm import RSAVLLM, replica_trace
except ImportError:  # pragma: no cover - reported by the smollm2_dir fixture (skip, or fail in CI)
    RSAVLLM = None  # type: ignore[assignment,misc]

N, K, T = 4, 2, 2
GEN = {"until": [], "do_sample": True, "temperature": 1.0, "max_gen_toks": 16}


# ------------------------------------------------------------------ the stand-in model


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


class FakeLLM:
    """`vllm.LLM` look-alike: each sample's text depends only on its prompt tokens, seed and
    choice index; the prompt tokens are echoed back (to check the order of batch outputs)."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        from vllm.engine.arg_utils import EngineArgs

        self.model = model  # lm-eval reads the model config; no weights are loaded
        self.llm_engine = SimpleNamespace(
            model_config=EngineArgs(model=model, **kwargs).create_model_config())

    def generate(self, prompts: list[Any], sampling_params: Any = None, use_tqdm: bool = False,
                 lora_request: Any = None) -> list[Any]:
        if not isinstance(sampling_params, list):
            sampling_params = [sampling_params] * len(prompts)
        out = []
        for prompt, sp in zip(prompts, sampling_params):
            ids = list(prompt["prompt_token_ids"])
            choices = [SimpleNamespace(
                text=f"Work {_h(ids, sp.seed, k) % 997}. <answer>{_h(ids, sp.seed, k) % 3}</answer>",
                token_ids=[1, 2, 3], finish_reason="stop") for k in range(sp.n)]
            out.append(SimpleNamespace(prompt_token_ids=ids, outputs=choices, pid=os.getpid()))
        return out


if RSAVLLM is not None:

    class FakeRSAVLLM(RSAVLLM):
        """``RSAVLLM`` over `FakeLLM` (in the parent and in every replica process)."""

        def __init__(self, pretrained: str, **kwargs: Any) -> None:
            with mock.patch.object(vllm_causallms, "LLM", FakeLLM):
                super().__init__(pretrained, **kwargs)


def _instance(task: str, doc_id: int, question: str, gen: dict[str, Any], idx: int = 0) -> Any:
    from lm_eval.api.instance import Instance

    return Instance(request_type="generate_until", doc={}, arguments=(question, dict(gen)),
                    idx=idx, metadata=(task, doc_id, 1))


def _requests() -> list[Any]:
    """Five problems of one task, two repeated (same id twice), and one of a second task
    with other generation settings (a second RSA run)."""
    reqs = [_instance("toy", i, f"What is {i} + {i}? Answer in <answer> tags.", GEN)
            for i in range(5)]
    reqs.append(_instance("toy", 2, "What is 2 + 2? Answer in <answer> tags.", GEN))
    reqs.append(_instance("other", 0, "What is 7 * 3? Answer in <answer> tags.",
                          {**GEN, "max_gen_toks": 12}))
    reqs.append(reqs[3])  # lm-eval lists an Instance once per repeat: the same object again
    return reqs


def _model(smollm2_dir: Path, dp: int, **extra: Any) -> Any:
    return FakeRSAVLLM(pretrained=str(smollm2_dir), data_parallel_size=dp, population=N,
                       aggregation_size=K, steps=T, max_model_len=512, **extra)


def _view(out: Any) -> tuple[Any, ...]:
    return (str(out), out.population, out.answers, out.chosen, out.votes, out.failed)


@pytest.fixture(scope="module")
def parallel(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A two-replica model (worker processes started on first use), closed afterwards."""
    trace = tmp_path_factory.mktemp("dp") / "run.jsonl"
    model = _model(smollm2_dir, 2, trace=str(trace))
    yield model
    model.close()


# ------------------------------------------------------------------ data-parallel rsa-vllm


def test_parent_builds_no_llm_but_keeps_the_tokenizer(parallel):
    assert not hasattr(parallel, "model")  # lm-eval's VLLM builds none with data_parallel_size>1
    assert parallel.data_parallel_size == 2
    assert parallel.tokenizer.encode("2 + 2")  # prompts and log-likelihood inputs need it
    assert parallel.max_length == 512


def test_two_replicas_give_the_single_replica_answers(parallel, smollm2_dir):
    reqs = _requests()
    single = _model(smollm2_dir, 1)
    expected = single.generate_until(reqs, disable_tqdm=True)
    got = parallel.generate_until(reqs, disable_tqdm=True)
    assert [_view(o) for o in got] == [_view(o) for o in expected]
    assert got[3].population != got[-1].population  # a repeat is its own RSA run (own seeds)
    assert all(len(o.population) == N and len(o.steps) == T for o in got)
    # the model info has the same shape as one replica's, plus each replica's figures
    info = parallel.get_model_info()["rsa"]
    assert info["engine"] == "vllm" and info["data_parallel_size"] == 2
    assert [row["step"] for row in info["steps"]] == list(range(1, T + 1))
    assert info["steps"] == single.get_model_info()["rsa"]["steps"]
    replicas = info["replicas"]
    pids = {r["pid"] for r in replicas}
    assert len(pids) == 2 and os.getpid() not in pids
    assert sum(r["requests"] for r in replicas) == len(reqs)
    # one LLM.generate per RSA step and per task (RSA run) a replica got problems of
    shards = shard_by_key([f"{r.task_name}/{r.doc_id}" for r in reqs], 2)
    expected = [T * len({reqs[j].task_name for j in shard}) for shard in shards]
    assert expected == [T, 2 * T]  # replica 0: toy only; replica 1: toy and other
    assert [r["engine_calls"] for r in replicas] == expected
    assert info["engine_calls"] == sum(expected)
    assert single.get_model_info()["rsa"]["engine_calls"] == 2 * T


def test_each_replica_traces_its_own_problems(parallel):
    from rsa_plugins.trace import load

    parallel.generate_until(_requests()[:5], disable_tqdm=True)
    trace = parallel.rsa.trace
    seen: list[set[str]] = []
    for i in range(2):
        own = Path(replica_trace(trace, i))  # and one file per task: run.replica0.toy.jsonl
        gens = [e for e in load(own.with_name(f"{own.stem}.toy{own.suffix}"))
                if e["event"] == "generation"]
        seen.append({e["problem"] for e in gens})
    assert not Path(trace).exists()  # one file per replica, no shared file
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] >= {f"toy/{i}" for i in range(5)}


def test_loglikelihood_batches_are_spread_over_the_replicas_in_order(parallel):
    batch = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11]]
    outs = parallel._model_generate(batch)
    assert [o.prompt_token_ids for o in outs] == batch
    assert len({o.pid for o in outs}) == 2  # interleaved over both worker processes


def test_replicas_reuse_their_model_across_calls(parallel):
    before = [r["pid"] for r in parallel.replica_info]
    parallel.generate_until(_requests()[:2], disable_tqdm=True)
    assert [r["pid"] for r in parallel.replica_info] == before


# ------------------------------------------------------------------ placement and bad input


def test_problems_are_dealt_round_robin_and_repeats_stay_together():
    keys = ["a", "b", "c", "b", "d", "e"]
    assert shard_by_key(keys, 2) == [[0, 2, 5], [1, 3, 4]]
    assert shard_by_key(keys, 4) == [[0, 5], [1, 3], [2], [4]]
    assert shard_by_key(["a"], 3) == [[0], [], []]


def test_replica_i_gets_gpus_i_tp_to_i_plus_one_tp():
    assert gpu_groups(2, 1, ["0", "1"]) == [["0"], ["1"]]
    assert gpu_groups(2, 2, ["4", "5", "6", "7"]) == [["4", "5"], ["6", "7"]]
    with pytest.raises(ConfigError, match=r"data_parallel_size=2 x tensor_parallel_size=2 needs 4"):
        gpu_groups(2, 2, ["0", "1", "2"])


def test_cpu_replicas_get_disjoint_cores():
    assert cpu_binds(2, [0, 1]) == ["0", "1"]
    assert cpu_binds(2, [3, 2, 1, 0]) == ["0,1", "2,3"]
    assert cpu_binds(3, [0, 1]) == ["nobind"] * 3


@pytest.mark.parametrize("value", [0, -1, "two", 1.5])
def test_bad_data_parallel_size_names_the_parameter(value):
    if RSAVLLM is None:
        pytest.skip("vllm is not installed")
    with pytest.raises(ConfigError, match=r"data_parallel_size must be an integer >= 1"):
        RSAVLLM(pretrained="/nonexistent", data_parallel_size=value, population=4)


def test_replica_traces_are_named_after_the_run():
    if RSAVLLM is None:
        pytest.skip("vllm is not installed")
    assert replica_trace("/x/run.jsonl", 1) == "/x/run.replica1.jsonl"


# ------------------------------------------------------------------ the worker pool itself


def test_pool_runs_jobs_in_separate_processes_with_their_own_environment():
    kwargs = {"_replica_getenv": os.getenv, "_replica_len": len}
    pool = ReplicaPool("types:SimpleNamespace", [kwargs, kwargs],
                       [{"RSA_TEST_REPLICA": "a"}, {"RSA_TEST_REPLICA": "b"}]).start()
    try:
        assert len({p["pid"] for p in pool.info} | {os.getpid()}) == 3
        assert pool.call("getenv", {0: "RSA_TEST_REPLICA", 1: "RSA_TEST_REPLICA"}) == {0: "a", 1: "b"}
        assert pool.call("len", {1: "abc"}) == {1: 3}  # only addressed replicas get a job
        assert "RSA_TEST_REPLICA" not in os.environ
        with pytest.raises(ReplicaError, match=r"(?s)replica 0 \(missing\).*AttributeError"):
            pool.call("missing", {0: None})
        with pytest.raises(ReplicaError, match="not running"):  # a failure closes the pool
            pool.call("len", {0: "x"})
    finally:
        pool.close()


def test_pool_reports_a_replica_that_cannot_start():
    with pytest.raises(ReplicaError, match=r"(?s)replica 0 \(start-up\).*TypeError"):
        ReplicaPool("builtins:int", [{"no_such_argument": 1}], [{}]).start()


def test_results_survive_the_trip_from_a_replica(parallel, smollm2_dir):
    reqs = _requests()[:3]
    outs = parallel.generate_until(reqs, disable_tqdm=True)
    assert all(type(o).__name__ == "RSAOutput" for o in outs)
    assert all(json.dumps(o.usage) and o.usage["completion_tokens"] > 0 for o in outs)
