"""``rsa bench``: RSA over in-process vLLM against raw generation of the same token work.

One process, one vLLM engine, synthetic AIME-sized problems, and generation lengths drawn from
a heavy-tailed (log-normal) distribution like real reasoning traces, forced per request
(``min_tokens = max_tokens = L``, ``ignore_eos``) so every mode does the same token work
whatever the weights (``--load-format dummy`` runs a model's shape with random weights).

Modes (several per invocation, run in the order given; results merge into one JSON file):

- ``lockstep`` (offline engine): RSA with one ``LLM.generate`` per step (`VLLMEngine`);
  ``--save-batches FILE`` writes what it sent, step by step.
- ``raw`` (offline engine): the prompts and lengths ``lockstep`` sent (earlier in the same
  invocation, else ``--replay FILE``), step by step, as plain ``LLM.generate`` calls: the
  same work without RSA, with lockstep's barriers.
- ``barrier-free`` / ``barrier-free-index`` (async engine): RSA on `AsyncVLLMEngine`, each
  problem moving on alone; ``-index`` orders candidates by slot for longer shared prefixes.
  With ``--data-parallel-size D`` (vLLM's own data parallelism), one problem's requests in
  flight share an engine core; ``barrier-free-spread`` leaves every request to vLLM's balancer.
- ``bound`` (async engine): the requests an RSA mode sent (the latest earlier in the same
  invocation, else ``--replay FILE``) all submitted at once to `AsyncLLM`: the same token work
  with no step dependencies, the ceiling any scheduling of RSA can approach.

Printed and saved per mode: wall time, generated and prompt tokens, generated tokens/s, the
prefix-cache hit rate (cached / prompt tokens, from vLLM's outputs), the engine-busy fraction
(`rsa_plugins.busy`: time with at least one request inside vLLM / time from the first request
in to the last one out), requests in flight (mean, max) and peak memory of the first GPU of
``CUDA_VISIBLE_DEVICES``; then the wall-time ratios between modes.

    rsa bench --model DIR --load-format dummy --engine offline --modes lockstep --save-batches b.json.gz --out r.json
    rsa bench --model DIR --load-format dummy --engine offline --modes raw --replay b.json.gz --out r.json
    rsa bench --model DIR --load-format dummy --engine async --modes barrier-free,bound --out r.json
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from .busy import BusyClock
from .config import RSAConfig
from .seeds import derive_seed
from .types import Problem, Request

OFFLINE_MODES = ("lockstep", "raw")
ASYNC_RSA_MODES = ("barrier-free", "barrier-free-index", "barrier-free-spread")
ASYNC_MODES = (*ASYNC_RSA_MODES, "bound")
RSA_MODES = ("lockstep", *ASYNC_RSA_MODES)
MODES = (*OFFLINE_MODES, *ASYNC_MODES)
BATCHES_FORMAT = "rsa-bench-batches/1"
#: setup keys that must match for a replayed file to be the same token work
WORKLOAD_KEYS = ("problems", "population", "aggregation_size", "steps", "max_tokens",
                 "length_median", "length_sigma", "seed")
_WORDS = ("triangle", "integer", "prime", "sequence", "circle", "radius", "remainder", "digits",
          "probability", "polynomial", "roots", "modulo", "positive", "sum", "product", "divisor")


def synthetic_problems(count: int, seed: int = 0, words: int = 60) -> list[Problem]:
    """`count` AIME-sized math problems (about `words` words each, deterministic)."""
    out = []
    for i in range(count):
        rng = random.Random(derive_seed(seed, "bench-problem", i))
        body = " ".join(rng.choice(_WORDS) for _ in range(words))
        text = (f"Problem {i + 1}. Let n be the {body}. Find the remainder when n is divided by "
                f"1000. Put the final answer in \\boxed{{}}.")
        out.append(Problem(text, id=f"bench-{i}", target=str(rng.randrange(1000)), kind="math"))
    return out


class HeavyTail:
    """Generation length of a request: log-normal(median, sigma) clipped to [low, high].

    A function of the request's seed only, so every mode forces the same length on the
    same (problem, step, slot).
    """

    def __init__(self, median: int, sigma: float, high: int, low: int = 16) -> None:
        if median < 1 or sigma < 0 or high < low:
            raise ValueError(f"lengths need median >= 1, sigma >= 0 and max_tokens >= {low}; "
                             f"got median={median}, sigma={sigma}, max_tokens={high}")
        self.median, self.sigma, self.high, self.low = median, sigma, high, low

    def __call__(self, seed: int) -> int:
        z = random.Random(derive_seed("length", seed)).gauss(0.0, 1.0)
        return max(self.low, min(self.high, int(self.median * math.exp(self.sigma * z))))

    def forced(self, req: Request) -> dict[str, Any]:
        """SamplingParams fields that force the request's length (the engine's sampling hook)."""
        n = self(req.seed)
        return {"max_tokens": n, "min_tokens": n, "ignore_eos": True}


def visible_gpu(env: str | None) -> int | str | None:
    """The first GPU this process may use, as named in ``CUDA_VISIBLE_DEVICES`` (`env`).

    Unset: GPU 0.  An index gives an int, a UUID (``GPU-...``/``MIG-...``, possibly a prefix,
    as CUDA accepts) the string; None when the variable hides every GPU ("", "-1").  Indices
    are CUDA's order, which is NVML's (PCI bus) order unless ``CUDA_DEVICE_ORDER`` says
    otherwise on a machine of mixed GPUs.
    """
    if env is None:
        return 0
    first = env.split(",")[0].strip()
    if not first or first.startswith("-"):
        return None
    return int(first) if first.isdigit() else first


def _nvml_device(which: int | str) -> Any:
    import pynvml

    pynvml.nvmlInit()
    if isinstance(which, int):
        return pynvml.nvmlDeviceGetHandleByIndex(which)
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        if uuid == which or uuid.startswith(which):
            return handle
    raise LookupError(f"no GPU with UUID {which!r}")


class MemoryPeak:
    """Peak memory in use (NVML, all processes) on the first GPU of ``CUDA_VISIBLE_DEVICES``
    while the block runs; `device` names the GPU as that variable would (nothing read on a
    machine without NVIDIA GPUs)."""

    def __init__(self, device: int | str | None = None) -> None:
        self.peak = 0
        self._stop = threading.Event()
        which = device if device is not None else visible_gpu(
            os.environ.get("CUDA_VISIBLE_DEVICES"))
        self._read: Callable[[], int] | None = None
        if which is None:
            return
        try:
            import pynvml

            handle = _nvml_device(which)
            self._read = lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:  # noqa: BLE001 - no NVIDIA GPU (CPU build): nothing to read
            self._read = None

    def __enter__(self) -> MemoryPeak:
        if self._read is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._read())  # type: ignore[misc]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._read is not None:
            self.peak = max(self.peak, self._read())

    @property
    def gib(self) -> float | None:
        return round(self.peak / 2**30, 2) if self._read is not None else None


#: what a run sent to the engine, one list per engine call (lockstep: per step):
#: (prompt token ids, forced generation length) per request
Batches = list[list[tuple[list[int], int]]]


class MeteredLLM:
    """Wraps a `vllm.LLM` or `AsyncLLM`: every request going in is recorded (prompt ids and
    length) and timed with a `BusyClock`, whoever sends it (RSA's engines or the bench's own
    replays), so every mode is measured at the same boundary."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.clock = BusyClock()
        self.batches: Batches = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def restart(self) -> None:
        """Start a new mode: clock and recording from zero."""
        self.clock.reset()
        self.batches = []

    def _record(self, prompts: Sequence[Any], params: Sequence[Any]) -> None:
        self.batches[-1].extend((list(p["prompt_token_ids"]), int(sp.max_tokens or 0))
                                for p, sp in zip(prompts, params))


class MeteredOfflineLLM(MeteredLLM):
    """`MeteredLLM` for `vllm.LLM`: one recorded batch per ``generate`` call."""

    def generate(self, prompts: Any, sampling_params: Any = None, **kwargs: Any) -> Any:
        prompts = list(prompts)
        params = (sampling_params if isinstance(sampling_params, list)
                  else [sampling_params] * len(prompts))
        self.batches.append([])
        self._record(prompts, params)
        self.clock.enter(len(prompts))
        try:
            return self._llm.generate(prompts, sampling_params=sampling_params, **kwargs)
        finally:
            self.clock.leave(len(prompts))


class MeteredAsyncLLM(MeteredLLM):
    """`MeteredLLM` for `AsyncLLM`: every request of a mode goes into one recorded batch."""

    async def generate(self, prompt: Any, sampling_params: Any, request_id: str,
                       *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if not self.batches:
            self.batches.append([])
        self._record([prompt], [sampling_params])
        self.clock.enter()
        try:
            async for out in self._llm.generate(prompt, sampling_params, request_id, *args,
                                                **kwargs):
                yield out
        finally:
            self.clock.leave()


def save_batches(path: Path, batches: Batches, setup: dict[str, Any]) -> None:
    """Write what a mode sent (gzip when the name ends in ``.gz``) for a later ``--replay``."""
    data = json.dumps({"format": BATCHES_FORMAT, "setup": setup, "batches": batches})
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data.encode()))
    else:
        path.write_text(data)


def load_batches(path: Path, setup: dict[str, Any]) -> Batches:
    """Batches saved by ``--save-batches``; the workload must be the one asked for now."""
    raw = path.read_bytes()
    data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    if data.get("format") != BATCHES_FORMAT:
        raise SystemExit(f"rsa bench: {path} is not a file written by --save-batches")
    differ = [f"{k}={data['setup'].get(k)!r} (now {setup[k]!r})" for k in WORKLOAD_KEYS
              if data["setup"].get(k) != setup[k]]
    if differ:
        raise SystemExit(f"rsa bench: {path} holds another workload: {', '.join(differ)}")
    return [[(list(ids), int(n)) for ids, n in batch] for batch in data["batches"]]


def _rsa_mode(engine: Any, problems: list[Problem], config: RSAConfig) -> dict[str, Any]:
    from ._background import run_sync
    from .loop import RSALoop

    before = (engine.prompt_tokens_sent, engine.cached_tokens)
    with MemoryPeak() as mem:
        started = time.perf_counter()
        results = run_sync(RSALoop(engine, config, progress=False).run(problems))
        wall = time.perf_counter() - started
    prompt = engine.prompt_tokens_sent - before[0]
    return {"wall_s": wall,
            "generated_tokens": sum(r.usage.completion_tokens for r in results),
            "prompt_tokens": prompt,
            "prefix_hit_rate": (engine.cached_tokens - before[1]) / max(1, prompt),
            "failed": sum(r.usage.failed for r in results),
            "generations": sum(m["requested"] for r in results for m in r.steps),
            "gpu_memory_gib": mem.gib}


def _forced(seed: int, n: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(seed=seed, temperature=1.0, max_tokens=n, min_tokens=n,
                          ignore_eos=True)


def _replay_figures(outputs: list[Any], wall: float, mem: MemoryPeak) -> dict[str, Any]:
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    return {"wall_s": wall, "generated_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
            "prompt_tokens": prompt,
            "prefix_hit_rate": sum(o.num_cached_tokens or 0 for o in outputs) / max(1, prompt),
            "failed": 0, "generations": len(outputs), "gpu_memory_gib": mem.gib}


def _raw_mode(llm: Any, batches: Batches, seed: int) -> dict[str, Any]:
    """Each recorded step's prompts and lengths as one plain `LLM.generate` call."""
    from vllm import TokensPrompt

    outputs: list[Any] = []
    with MemoryPeak() as mem:
        started = time.perf_counter()
        for t, batch in enumerate(batches):
            prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in batch]
            params = [_forced(derive_seed(seed, "raw", t, i), n) for i, (_, n) in enumerate(batch)]
            outputs += llm.generate(prompts, sampling_params=params, use_tqdm=False)
        wall = time.perf_counter() - started
    return _replay_figures(outputs, wall, mem)


def _bound_mode(llm: Any, batches: Batches, seed: int) -> dict[str, Any]:
    """Every recorded request at once on `AsyncLLM`: no steps, nothing waits for anything."""
    from vllm import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    from ._background import run_sync

    async def one(i: int, ids: list[int], n: int) -> Any:
        sp = _forced(derive_seed(seed, "bound", i), n)
        sp.output_kind = RequestOutputKind.FINAL_ONLY
        final = None
        async for out in llm.generate(TokensPrompt(prompt_token_ids=ids), sp, f"bound-{i}"):
            final = out
        return final

    async def everything() -> list[Any]:
        flat = [x for batch in batches for x in batch]
        return list(await asyncio.gather(*(one(i, ids, n) for i, (ids, n) in enumerate(flat))))

    with MemoryPeak() as mem:
        started = time.perf_counter()
        outputs = run_sync(everything())
        wall = time.perf_counter() - started
    return _replay_figures(outputs, wall, mem)


def _warm_up(engine: Any) -> None:
    """A small batch first, so no mode pays for the engine's first-call set-up."""
    from ._background import run_sync

    hook, engine.sampling_hook = engine.sampling_hook, None
    reqs = [Request(messages=[{"role": "user", "content": f"Count to {i}."}], seed=i,
                    max_tokens=32) for i in range(8)]
    run_sync(engine.generate(reqs))
    engine.sampling_hook = hook
    engine.prompt_tokens_sent = engine.cached_tokens = 0


def _reset_cache(engine: Any) -> None:
    from .engines.vllm import AsyncVLLMEngine

    if isinstance(engine, AsyncVLLMEngine):
        from ._background import run_sync

        run_sync(engine.llm.reset_prefix_cache())
    else:
        engine.llm.reset_prefix_cache()


def check_modes(modes: list[str], engine: str, replay: bool) -> None:
    """Modes must belong to the engine, and replays need something to replay."""
    allowed = OFFLINE_MODES if engine == "offline" else ASYNC_MODES
    bad = [m for m in modes if m not in allowed]
    if bad or not modes:
        raise SystemExit(f"rsa bench: --modes for --engine {engine} must be among "
                         f"{', '.join(allowed)}; got {','.join(modes)!r}")
    for i, mode in enumerate(modes):
        before = modes[:i]
        if mode == "raw" and "lockstep" not in before and not replay:
            raise SystemExit("rsa bench: raw replays lockstep's steps: list lockstep before it "
                             "or give --replay FILE (written by lockstep's --save-batches)")
        if mode == "bound" and not set(before) & set(RSA_MODES) and not replay:
            raise SystemExit("rsa bench: bound replays an RSA mode's requests: list "
                             "barrier-free before it or give --replay FILE")


def workload(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs the same token work (checked when a file is replayed)."""
    return {"problems": args.problems, "population": args.population,
            "aggregation_size": args.aggregation_size, "steps": args.steps,
            "max_tokens": args.max_tokens, "length_median": args.median,
            "length_sigma": args.sigma, "seed": args.seed}


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the requested modes; returns {mode: figures} (also merged into ``args.out``)."""
    from .engines.vllm import AsyncVLLMEngine, VLLMEngine

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    check_modes(modes, args.engine, args.replay is not None)
    work = workload(args)
    replayed = load_batches(args.replay, work) if args.replay is not None else None
    lengths = HeavyTail(args.median, args.sigma, args.max_tokens)
    problems = synthetic_problems(args.problems, args.seed)
    config = RSAConfig(population=args.population, aggregation_size=args.aggregation_size,
                       steps=args.steps, seed=args.seed, max_tokens=args.max_tokens, view="full",
                       tail_tokens=args.max_tokens)
    options: dict[str, Any] = {"max_model_len": args.max_model_len, "dtype": args.dtype,
                               "seed": args.seed, "enable_prefix_caching": True,
                               "sampling_hook": lengths.forced}
    if args.load_format:
        options["load_format"] = args.load_format
    if args.gpu_memory_utilization:
        options["gpu_memory_utilization"] = args.gpu_memory_utilization
    if args.enforce_eager:
        options["enforce_eager"] = True
    started = time.perf_counter()
    if args.engine == "offline":
        engine: Any = VLLMEngine(args.model, **options)
        llm: MeteredLLM = MeteredOfflineLLM(engine.llm)
    else:
        if args.data_parallel_size > 1:
            options["data_parallel_size"] = args.data_parallel_size
        engine = AsyncVLLMEngine(args.model, n_per_request=False, **options)
        llm = MeteredAsyncLLM(engine.llm)
    engine.llm = llm
    engine.supports_n = False  # one request per sample: each gets its own forced length
    _warm_up(engine)
    figures: dict[str, Any] = {"_setup": {
        "model": args.model, "load_format": args.load_format, "engine": args.engine,
        **work, "max_model_len": engine.max_model_len,
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "data_parallel_size": getattr(engine, "data_parallel_size", 1),
        "engine_start_s": time.perf_counter() - started}}
    recorded: dict[str, Batches] = {}
    for mode in modes:
        _reset_cache(engine)
        llm.restart()
        if mode == "raw":
            f = _raw_mode(llm, recorded.get("lockstep") or replayed or [], args.seed)
        elif mode == "bound":
            source = recorded[next(reversed(recorded))] if recorded else replayed
            f = _bound_mode(llm, source or [], args.seed)
        else:
            cfg = config.replace(lockstep=mode == "lockstep",
                                 candidate_order="index" if mode.endswith("-index") else "drawn")
            placement = getattr(engine, "placement", None)
            if mode.endswith("-spread"):
                engine.placement = None  # vLLM's own balancer places every request
            ranks = _rank_counts(engine)
            try:
                f = _rsa_mode(engine, problems, cfg)
            finally:
                if placement is not None:
                    engine.placement = placement
            if ranks:
                f["ranks"] = _rank_delta(ranks, _rank_counts(engine))
            recorded[mode] = [list(b) for b in llm.batches]
            if mode == "lockstep":
                f["generate_calls"] = len(llm.batches)
                if args.save_batches:
                    save_batches(args.save_batches, recorded[mode], work)
        f.update({f"engine_{k}": v for k, v in llm.clock.snapshot().items()})
        f["generated_tokens_per_s"] = f["generated_tokens"] / max(1e-9, f["wall_s"])
        figures[mode] = f
        print(f"[bench] {mode}: {_row(f)}", flush=True)
        if args.out:
            _merge(Path(args.out), {mode: f, f"_setup_{args.engine}": figures["_setup"]})
    if hasattr(engine, "aclose"):
        from ._background import run_sync

        engine.llm = llm._llm
        run_sync(engine.aclose())
    return figures


def _rank_counts(engine: Any) -> dict[int, dict[str, int]]:
    return {r: dict(v) for r, v in getattr(engine, "ranks", {}).items()}


def _rank_delta(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]
                ) -> list[dict[str, Any]]:
    """Per engine core (data-parallel rank): what vLLM reported during one mode."""
    out = []
    for r, now in sorted(after.items()):
        d = {k: v - before.get(r, {}).get(k, 0) for k, v in now.items()}
        d["prefix_hit_rate"] = round(d["cached_tokens"] / max(1, d["prompt_tokens"]), 4)
        out.append({"rank": r, **d})
    return out


def _row(f: dict[str, Any]) -> str:
    return (f"{f['wall_s']:.1f} s, {f['generated_tokens']} generated + {f['prompt_tokens']} prompt "
            f"tokens, {f['generated_tokens_per_s']:.0f} gen tok/s, prefix hits "
            f"{f['prefix_hit_rate']:.3f}, engine busy {f['engine_busy_fraction']}, in flight "
            f"{f['engine_in_flight_mean']} mean / {f['engine_in_flight_max']} max, GPU "
            f"{f['gpu_memory_gib']} GiB, failed {f['failed']}")


def _merge(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(new)
    data["ratios"] = ratios(data)
    path.write_text(json.dumps(data, indent=1))
    return data


def ratios(data: dict[str, Any]) -> dict[str, float]:
    """Wall-time ratios between the modes present (same token work): above 1, the first mode
    is slower; ``X_over_bound_wall`` is how far X is from the ceiling."""
    out: dict[str, float] = {}
    wall = {m: data[m]["wall_s"] for m in MODES if m in data}
    if "lockstep" in wall and "raw" in wall:
        out["lockstep_over_raw_wall"] = wall["lockstep"] / wall["raw"]
    for m in ASYNC_RSA_MODES:
        if m in wall and "lockstep" in wall:
            out[f"lockstep_over_{m}_wall"] = wall["lockstep"] / wall[m]
        if m in wall and "raw" in wall:
            out[f"raw_over_{m}_wall"] = wall["raw"] / wall[m]
    if "bound" in wall:
        for m in MODES:
            if m in wall and m != "bound":
                out[f"{m}_over_bound_wall"] = wall[m] / wall["bound"]
    return {k: round(v, 4) for k, v in out.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rsa bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--engine", choices=("offline", "async"), default="offline",
                   help="offline: vllm.LLM (modes lockstep, raw); async: AsyncLLM (modes "
                   "barrier-free, barrier-free-index, bound)")
    p.add_argument("--modes", default=None, help="comma-separated modes, run in this order "
                   "(default: all of the engine's; barrier-free-spread only with "
                   "--data-parallel-size > 1)")
    p.add_argument("--save-batches", type=Path, default=None, metavar="FILE",
                   help="write what lockstep sent (per step) to FILE (.gz: compressed)")
    p.add_argument("--replay", type=Path, default=None, metavar="FILE",
                   help="raw and bound replay FILE (from --save-batches) when no mode of this "
                   "invocation recorded the work")
    p.add_argument("--load-format", default=None, help="vLLM load format; dummy = random weights")
    p.add_argument("--problems", type=int, default=30, help="synthetic problems (30)")
    p.add_argument("--population", "-N", type=int, default=16, help="N (16)")
    p.add_argument("--aggregation-size", "-K", type=int, default=4, help="K (4)")
    p.add_argument("--steps", "-T", type=int, default=4, help="T (4)")
    p.add_argument("--max-tokens", type=int, default=8192, help="longest generation (8192)")
    p.add_argument("--median", type=int, default=256, help="median generation length (256)")
    p.add_argument("--sigma", type=float, default=1.2, help="log-normal sigma of lengths (1.2)")
    p.add_argument("--max-model-len", type=int, default=40960, help="context length (40960)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / compilation")
    p.add_argument("--data-parallel-size", type=int, default=1,
                   help="vLLM engine cores behind the async engine (vLLM's data parallelism)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON file the figures are merged into")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rsa bench``."""
    args = build_parser().parse_args(argv)
    for name, low in (("problems", 1), ("population", 1), ("aggregation_size", 1), ("steps", 1),
                      ("max_tokens", 16), ("median", 1), ("max_model_len", 64),
                      ("data_parallel_size", 1)):
        if getattr(args, name) < low:
            raise SystemExit(f"rsa bench: --{name.replace('_', '-')} must be >= {low}, "
                             f"got {getattr(args, name)}")
    if args.aggregation_size > args.population:
        raise SystemExit(f"rsa bench: --aggregation-size must be between 1 and --population "
                         f"({args.population}), got {args.aggregation_size}")
    if args.modes is None:
        spread = ("barrier-free-spread",) if args.data_parallel_size > 1 else ()
        args.modes = ",".join(OFFLINE_MODES if args.engine == "offline" else
                              ("barrier-free", "barrier-free-index", *spread, "bound"))
    if args.data_parallel_size > 1 and args.engine != "async":
        raise SystemExit("rsa bench: --data-parallel-size needs --engine async (one AsyncLLM "
                         "over several engine cores)")
    if args.replay is not None and not args.replay.exists():
        raise SystemExit(f"rsa bench: --replay {args.replay}: no such file")
    figures = run_bench(args)
    data = json.loads(args.out.read_text()) if args.out and args.out.exists() else figures
    print(json.dumps({"ratios": data.get("ratios", ratios(data))}, indent=1))
    return 0
