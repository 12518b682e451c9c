"""``rsa-vllm``: lm-eval's ``vllm`` model with RSA in place of plain sampling.

lm-eval's vLLM module imports vllm at import time; the registry imports this module only when
``--model rsa-vllm`` is used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lm_eval.models import vllm_causallms
from lm_eval.models.vllm_causallms import VLLM

from ..._background import run_sync
from ...config import RSAConfig
from ...engines.base import Engine
from ...engines.vllm import VLLMEngine
from ...loop import RSALoop
from ...types import Message, Problem, RSAResult
from ...validate import ConfigError
from .generate import RSAGenerateMixin, RSARunError
from .options import RSAOptions, check_model_args
from .outputs import RSAOutput
from .replicas import ReplicaPool, ShardRequest, replica_envs, shard_by_key


class RSAVLLM(RSAGenerateMixin, VLLM):
    """lm-eval's vLLM model; `generate_until` runs RSA, everything else is inherited.

    model_args: the RSA parameters (``population``, ``aggregation_size``, ``steps``,
    ``selection``, ``seed``, ``temperature``, ``top_p``, ``max_tokens``, ``view``,
    ``tail_tokens``, ``include_reasoning``, ``kind``, ``template``, ``sampling``; also with an
    ``rsa_`` prefix), ``trace`` (JSONL trajectory, resumed when it exists) and ``resume``.
    Every other argument goes to lm-eval's ``vllm`` model and from there to ``vllm.LLM``.
    ``seed`` seeds both RSA and the engine.  Each RSA step is one ``LLM.generate`` over every
    request's population.

    ``data_parallel_size=D`` (D > 1) starts D worker processes, each with its own ``vllm.LLM``
    (on GPUs: ``tensor_parallel_size`` GPUs each, replica i on GPUs [i*tp, (i+1)*tp)).  The
    problems are dealt to the replicas and each runs the whole RSA loop on its share: one call
    per replica per ``generate_until``, results identical per problem to a single replica
    (subsets and seeds hash the problem id).  Traces go to one file per replica
    (``run.replica0.jsonl``, ...).  Ray is not needed.  Log-likelihood requests are spread
    over the same replicas.
    """

    #: set in replicas' parents: the worker processes (started on first use)
    _replicas: ReplicaPool | None = None

    def __init__(self, pretrained: str, **kwargs: Any) -> None:
        replica_args = dict(kwargs)
        options = RSAOptions.pop_from(kwargs)
        check_model_args("rsa-vllm", kwargs, _engine_args())
        dp = _data_parallel_size(kwargs.get("data_parallel_size", 1))
        kwargs["data_parallel_size"] = dp
        if "seed" in options.explicit:
            kwargs["seed"] = options.config.seed
        kwargs.pop("device", None)  # the CLI always sends one; vLLM picks devices itself
        if dp > 1:
            with _ray_not_required():  # no LLM in this process: the replicas build their own
                super().__init__(pretrained=pretrained, **kwargs)
        else:
            super().__init__(pretrained=pretrained, **kwargs)
        self._init_rsa(options)
        self._engine: VLLMEngine | None = None
        self._replica_spec = (pretrained, replica_args)
        self.replica_info: list[dict[str, Any]] = []

    def apply_chat_template(self, chat_history: list[Message],
                            add_generation_prompt: bool = True) -> str:
        """lm-eval's rendering; the messages are remembered to re-render aggregation turns."""
        rendered = super().apply_chat_template(chat_history, add_generation_prompt)
        return self._remember_chat(rendered, chat_history)

    # ------------------------------------------------------------ data parallel

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """RSA on every request; with ``data_parallel_size > 1`` each replica runs the whole
        loop on its share of the problems (one call per replica), answers in request order."""
        if self.data_parallel_size <= 1 or not requests:
            return super().generate_until(requests, disable_tqdm)
        shards = shard_by_key([self._problem(r).id for r in requests], self.data_parallel_size)
        payloads = {}
        for i, shard in enumerate(shards):
            if shard:
                reqs = [ShardRequest.of(requests[j]) for j in shard]
                chats = {r.args[0]: self._chat_memo[r.args[0]] for r in reqs
                         if r.args[0] in self._chat_memo}
                payloads[i] = {"requests": reqs, "chats": chats, "disable_tqdm": disable_tqdm}
        replies = self._pool().call("generate", payloads)
        outputs: list[RSAOutput | None] = [None] * len(requests)
        runs: list[dict[str, Any]] = []
        for i, reply in sorted(replies.items()):
            for j, out in zip(shards[i], reply["outputs"]):
                outputs[j] = out
            runs += [{**run, "replica": i} for run in reply["runs"]]
            self.replica_info[i].update(requests=self.replica_info[i].get("requests", 0)
                                        + len(shards[i]), **reply["engine"])
        done = [o for o in outputs if o is not None]
        if len(done) != len(requests):
            raise RuntimeError(f"replicas returned {len(done)} answers for {len(requests)} requests")
        hook = getattr(self, "cache_hook", None)
        for req, out in zip(requests, done):
            self._rsa_steps.append(out.steps)
            if hook is not None:
                hook.add_partial("generate_until", req.args, out)
        self._rsa_runs += runs
        self._rsa_engine_info = self._replica_engine_info()
        if all(o.failed for o in done):
            first = next(r["error"] for r in replies.values() if r["error"])
            raise RSARunError(f"RSA failed for every request ({len(done)}) on every replica; "
                              f"first replica's error: {first}")
        return list(done)

    def _model_generate(self, requests: list[list[int]], generate: bool = False,
                        sampling_params: Any = None) -> Any:
        """lm-eval's batch generation (log-likelihoods); spread over the replicas when
        ``data_parallel_size > 1`` instead of lm-eval's ray actors."""
        if self.data_parallel_size <= 1:
            return super()._model_generate(requests, generate, sampling_params)
        from vllm import SamplingParams

        if not generate or sampling_params is None:
            sampling_params = SamplingParams(temperature=0, prompt_logprobs=1, max_tokens=1,
                                             detokenize=False)
        if not isinstance(sampling_params, list):
            sampling_params = [sampling_params] * len(requests)
        shards = [list(range(i, len(requests), self.data_parallel_size))
                  for i in range(self.data_parallel_size)]
        replies = self._pool().call("model_generate", {
            i: {"requests": [requests[j] for j in s],
                "sampling_params": [sampling_params[j] for j in s]}
            for i, s in enumerate(shards) if s})
        outputs: list[Any] = [None] * len(requests)
        for i, reply in replies.items():
            for j, out in zip(shards[i], reply):
                outputs[j] = out
        return outputs

    def _pool(self) -> ReplicaPool:
        """The replica processes, started on first use (each loads the model once)."""
        if self._replicas is None:
            pretrained, args = self._replica_spec
            base = {k: v for k, v in args.items() if k not in ("trace", "rsa_trace")}
            kwargs = []
            for i in range(self.data_parallel_size):
                kw = {**base, "pretrained": pretrained, "data_parallel_size": 1}
                if self.rsa.trace:
                    kw["trace"] = replica_trace(self.rsa.trace, i)
                kwargs.append(kw)
            envs = replica_envs(self.data_parallel_size, self.tensor_parallel_size)
            factory = f"{type(self).__module__}:{type(self).__qualname__}"
            pool = ReplicaPool(factory, kwargs, envs).start()
            self._replicas = pool
            self.replica_info = [{"replica": i, **info} for i, info in enumerate(pool.info)]
            weakref.finalize(self, pool.close)
        return self._replicas

    def close(self) -> None:
        """Stop the replica processes (also done at exit)."""
        if self._replicas is not None:
            self._replicas.close()
            self._replicas = None

    def _replica_engine_info(self) -> dict[str, Any]:
        """Engine info for ``get_model_info``: the replicas' engine, summed counters and
        each replica's own figures (pid, GPUs or CPU binding, requests, calls)."""
        served = [r for r in self.replica_info if "engine" in r]
        info: dict[str, Any] = {k: served[0][k] for k in ("engine", "model", "max_model_len")
                                if served and k in served[0]}
        for key in ("engine_calls", "engine_generate_seconds"):
            info[key] = sum(r.get(key, 0) for r in self.replica_info)
        info["data_parallel_size"] = self.data_parallel_size
        info["replicas"] = [{k: v for k, v in r.items() if k not in ("engine", "model")}
                            for r in self.replica_info]
        return info

    # ------------------------------------------------------------ replica side

    def _replica_generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """In a replica: RSA over its share of the requests (the parent's ``generate_until``)."""
        self._chat_memo.update(payload["chats"])
        self._rsa_steps, self._rsa_runs = [], []
        recorder = _Recorder()
        self.cache_hook = recorder
        requests = payload["requests"]
        error = None
        try:
            self.generate_until(requests, disable_tqdm=payload["disable_tqdm"])
        except RSARunError as exc:  # "failed for every request": the parent decides overall
            outputs = [recorder.outputs.get(id(r.args)) for r in requests]
            if not all(o is not None and o.failed for o in outputs):
                raise
            error = str(exc)
        outputs = [recorder.outputs[id(r.args)] for r in requests]
        return {"outputs": outputs, "runs": self._rsa_runs, "engine": self._rsa_engine_info,
                "pid": os.getpid(), "error": error}

    def _replica_model_generate(self, payload: dict[str, Any]) -> list[Any]:
        """In a replica: lm-eval's batch generation on this replica's ``LLM``."""
        return list(self._model_generate(payload["requests"], True, payload["sampling_params"]))

    # ------------------------------------------------------------ RSA hooks

    def _rsa_engine(self, config: RSAConfig) -> tuple[Engine, RSAConfig]:
        if self._engine is None:
            self._engine = VLLMEngine(
                self.model, tokenizer=self.tokenizer, max_model_len=self.max_length,
                think_end_token=self.think_end_token, render=self._render,
                encode=self.tok_encode, lora_request=self.lora_request)
        # lm-eval's own defaults for its vLLM model: keep special tokens in the text
        sampling = {"skip_special_tokens": False, "spaces_between_special_tokens": False,
                    **config.sampling}
        return self._engine, config.replace(sampling=sampling)

    def _rsa_run(self, loop: RSALoop, problems: list[Problem]) -> list[RSAResult]:
        """In this thread (in-process vLLM), or on the background loop inside a running one."""
        if _loop_running():
            return run_sync(loop.run(problems))
        return asyncio.run(loop.run(problems))

    def _render(self, messages: list[Message]) -> str:
        """A chat rendered exactly as lm-eval's vLLM model renders it (its template settings)."""
        prefill = messages[-1]["role"] == "assistant"
        return VLLM.apply_chat_template(self, messages, add_generation_prompt=not prefill)


class _Recorder:
    """Stands in for lm-eval's cache hook in a replica: keeps each output by request."""

    def __init__(self) -> None:
        self.outputs: dict[int, RSAOutput] = {}

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.outputs[id(req)] = res


def replica_trace(trace: str, replica: int) -> str:
    """Trace file of one replica: ``run.jsonl`` -> ``run.replica0.jsonl``."""
    p = Path(trace)
    return str(p.with_name(f"{p.stem}.replica{replica}{p.suffix}"))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _engine_args() -> set[str]:
    """What lm-eval's vLLM model and ``vllm.EngineArgs`` accept as model_args."""
    from vllm.engine.arg_utils import EngineArgs

    own = set(inspect.signature(VLLM.__init__).parameters) - {"self", "args", "kwargs"}
    return own | {f.name for f in dataclasses.fields(EngineArgs)}


def _data_parallel_size(value: Any) -> int:
    try:
        dp = int(value if value is not None else 1)
    except (TypeError, ValueError):
        dp = 0
    if dp < 1 or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"data_parallel_size must be an integer >= 1 (replicas of the model, "
                          f"one per GPU or GPU group), got {value!r}")
    return dp


@contextmanager
def _ray_not_required() -> Iterator[None]:
    """lm-eval refuses ``data_parallel_size > 1`` without ray, which its own data-parallel
    path uses; RSAVLLM's replicas are plain processes, so the check is answered for ray."""
    original = vllm_causallms.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return True if name == "ray" else original(name, *args)

    vllm_causallms.find_spec = find_spec  # type: ignore[assignment]
    try:
        yield
    finally:
        vllm_causallms.find_spec = original  # type: ignore[assignment]
