"""Data-parallel replicas for ``rsa-vllm``: one worker process per replica, each with its own model.

A worker is started once (``multiprocessing`` spawn), builds its model from the same arguments
as the parent, then answers whole jobs: one message in, one reply out.  ``rsa-vllm`` sends each
replica its share of the problems and the replica runs the entire RSA loop on them, so a
replica is called once per ``generate_until``, not once per RSA step, and the model is loaded
once per replica for the life of the lm-eval model (lm-eval's own ``data_parallel_size``
reloads it on every call).

Placement: on GPUs replica ``i`` sees ``CUDA_VISIBLE_DEVICES`` = GPUs ``[i*tp, (i+1)*tp)`` of
the visible ones (``tp`` = ``tensor_parallel_size``); on vLLM's CPU build each replica is bound
to its own share of the cores (``VLLM_CPU_OMP_THREADS_BIND``) unless you bound them yourself.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import multiprocessing
import os
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ...validate import ConfigError

#: environment variables lm-eval / vLLM may leave behind that make a single-replica engine
#: believe it is one rank of a data-parallel group
_DP_VARIABLES = ("VLLM_DP_RANK", "VLLM_DP_RANK_LOCAL", "VLLM_DP_SIZE", "VLLM_DP_MASTER_IP",
                 "VLLM_DP_MASTER_PORT")


@dataclass(frozen=True)
class ShardRequest:
    """What RSA reads of an lm-eval ``Instance``; small and picklable, sent to a replica."""

    args: tuple[Any, ...]
    task_name: str | None
    doc_id: Any
    idx: int

    @classmethod
    def of(cls, instance: Any) -> ShardRequest:
        # a new tuple: lm-eval lists one Instance once per repeat, and the replica tells
        # requests apart by the identity of their args
        return cls(tuple([*instance.args]), instance.task_name, instance.doc_id, instance.idx)


def shard_by_key(keys: Sequence[str], shards: int) -> list[list[int]]:
    """Positions of `keys` dealt to `shards` shards.

    Distinct keys go round-robin in order of first appearance (neighbouring problems, which
    tend to have similar lengths, land on different replicas); equal keys stay in one shard,
    and every shard keeps the original order.
    """
    if shards < 1:
        raise ConfigError(f"data_parallel_size must be >= 1, got {shards}")
    owner: dict[str, int] = {}
    out: list[list[int]] = [[] for _ in range(shards)]
    for pos, key in enumerate(keys):
        shard = owner.setdefault(key, len(owner) % shards)
        out[shard].append(pos)
    return out


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every GPU that
    torch counts; none on vLLM's CPU build."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_groups(replicas: int, per_replica: int, gpus: Sequence[str]) -> list[list[str]]:
    """GPUs of each replica: replica ``i`` gets ``gpus[i*per_replica:(i+1)*per_replica]``."""
    need = replicas * per_replica
    if need > len(gpus):
        raise ConfigError(
            f"data_parallel_size={replicas} x tensor_parallel_size={per_replica} needs {need} "
            f"GPUs, but {len(gpus)} are visible ({','.join(gpus) or 'none'}); lower "
            "data_parallel_size or set CUDA_VISIBLE_DEVICES")
    return [list(gpus[i * per_replica:(i + 1) * per_replica]) for i in range(replicas)]


def cpu_binds(replicas: int, cores: Sequence[int]) -> list[str]:
    """``VLLM_CPU_OMP_THREADS_BIND`` per replica: disjoint, equal shares of `cores`
    (``"nobind"`` for all when there are fewer cores than replicas)."""
    cores = sorted(cores)
    share = len(cores) // replicas
    if share == 0:
        return ["nobind"] * replicas
    return [",".join(str(c) for c in cores[i * share:(i + 1) * share]) for i in range(replicas)]


def replica_envs(replicas: int, tensor_parallel_size: int) -> list[dict[str, str]]:
    """Environment overrides of each replica's process (GPU or CPU placement)."""
    gpus = visible_gpus()
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": ",".join(g)}
                for g in gpu_groups(replicas, tensor_parallel_size, gpus)]
    if os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        return [{} for _ in range(replicas)]  # the user placed them: leave it
    if tensor_parallel_size > 1:
        # vLLM separates the cores of the ranks of one engine with "|"
        return [{"VLLM_CPU_OMP_THREADS_BIND": "auto"} for _ in range(replicas)]
    return [{"VLLM_CPU_OMP_THREADS_BIND": b}
            for b in cpu_binds(replicas, sorted(os.sched_getaffinity(0)))]


class ReplicaError(RuntimeError):
    """A replica failed to start, raised in a job, or died."""


class ReplicaPool:
    """`len(kwargs)` worker processes, each holding ``factory(**kwargs[i])``.

    `factory` is ``"module:QualifiedName"`` (importable in a fresh interpreter); `envs[i]`
    is applied to worker ``i``'s environment before it imports anything.  `call` sends each
    addressed worker one job and returns their replies; a job named ``name`` runs the
    held object's ``_replica_<name>(payload)``.
    """

    def __init__(self, factory: str, kwargs: Sequence[Mapping[str, Any]],
                 envs: Sequence[Mapping[str, str]]) -> None:
        if len(kwargs) != len(envs):
            raise ValueError("one environment per replica is needed")
        self.factory = factory
        self.kwargs = [dict(k) for k in kwargs]
        self.envs = [dict(e) for e in envs]
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self.info: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.kwargs)

    def start(self) -> ReplicaPool:
        """Start every worker and wait until each has built its model."""
        ctx = multiprocessing.get_context("spawn")
        atexit.register(self.close)
        try:
            for i, (kw, env) in enumerate(zip(self.kwargs, self.envs)):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, self.factory, kw, env),
                                   name=f"rsa-replica-{i}", daemon=False)  # vLLM spawns children
                with _environ(env):  # also seen by whatever the child imports before _serve
                    proc.start()
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)
            ready = self._collect(range(len(self.kwargs)), "start-up")
            self.info = [ready[i] for i in range(len(self.kwargs))]
        except BaseException:
            self.close()
            raise
        return self

    def call(self, name: str, payloads: Mapping[int, Any]) -> dict[int, Any]:
        """Send job `name` to each replica in `payloads` (at once) and return their replies."""
        if not self._procs:
            raise ReplicaError("the replicas are not running (closed, or never started)")
        for i, payload in payloads.items():
            self._conns[i].send((name, payload))
        return self._collect(payloads, name)

    def _collect(self, replicas: Any, what: str) -> dict[int, Any]:
        pending = {self._conns[i]: i for i in replicas}
        sentinels = {self._procs[i].sentinel: i for i in replicas}
        replies: dict[int, Any] = {}
        failures: list[str] = []
        while pending:
            for ready in wait([*pending, *(s for s, i in sentinels.items() if i in pending.values())]):
                if isinstance(ready, Connection):
                    if ready not in pending:
                        continue
                    i = pending.pop(ready)
                    try:
                        status, value = ready.recv()
                    except EOFError:
                        status, value = "error", "the process closed its pipe"
                    if status == "ok":
                        replies[i] = value
                    else:
                        failures.append(f"replica {i} ({what}): {value}")
                else:
                    i = sentinels[ready]
                    conn = self._conns[i]
                    if conn in pending and not conn.poll():
                        pending.pop(conn)
                        code = self._procs[i].exitcode
                        failures.append(f"replica {i} ({what}): process died (exit code {code})")
        if failures:
            self.close()
            raise ReplicaError("; ".join(failures))
        return replies

    def close(self, grace: float = 60.0) -> None:
        """Ask every worker to stop, wait up to `grace` seconds, then terminate. Idempotent."""
        atexit.unregister(self.close)
        for conn in self._conns:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            proc.join(grace)
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []


class _environ:
    """Set environment variables for the duration of a `with` block."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve(factory: str) -> Any:
    """The object named by ``"module:QualifiedName"``."""
    module, _, name = factory.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _serve(conn: Connection, factory: str, kwargs: dict[str, Any], env: dict[str, str]) -> None:
    """Worker main: build the object, report ready, then answer jobs until told to stop."""
    os.environ.update(env)
    for key in _DP_VARIABLES:
        os.environ.pop(key, None)
    try:
        try:
            held = resolve(factory)(**kwargs)
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", traceback.format_exc(limit=8)))
            return
        conn.send(("ok", {"pid": os.getpid(), "env": env}))
        _answer(conn, held)
        del held
    finally:
        conn.close()
        _exit_cleanly()


def _answer(conn: Connection, held: Any) -> None:
    """Run jobs from `conn` on `held` until the parent says stop or goes away."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if job is None:
            return
        name, payload = job
        try:
            conn.send(("ok", getattr(held, f"_replica_{name}")(payload)))
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", traceback.format_exc(limit=8)))


def _exit_cleanly() -> None:
    """Run what a normal interpreter exit would (multiprocessing ends workers with
    ``os._exit``): vLLM shuts its engine-core processes down from atexit / weakref finalizers,
    and would otherwise leave them running as orphans."""
    gc.collect()
    atexit._run_exitfuncs()
