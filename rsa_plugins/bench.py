"""``rsa bench``: RSA over in-process vLLM against raw generation of the same token work.

One process, one vLLM engine, synthetic AIME-sized problems, and generation lengths drawn from
a heavy-tailed (log-normal) distribution like real reasoning traces, forced per request
(``min_tokens = max_tokens = L``, ``ignore_eos``) so every mode does the same token work
whatever the weights (``--load-format dummy`` runs a model's shape with random weights).

Modes (several per invocation; results merge into one JSON file across invocations):

- ``lockstep`` (offline engine): RSA with one ``LLM.generate`` per step (`VLLMEngine`).
- ``raw`` (offline engine, after ``lockstep``): the prompts and lengths ``lockstep`` sent, step by
  step, as plain ``LLM.generate`` calls: the baseline of the same work without RSA.
- ``barrier-free`` / ``barrier-free-index`` (async engine): RSA on `AsyncVLLMEngine`, each
  problem moving on alone; ``-index`` orders candidates by slot for longer shared prefixes.

Printed and saved per mode: wall time, generated and prompt tokens, generated tokens/s, the
prefix-cache hit rate (cached / prompt tokens, from vLLM's outputs) and peak GPU memory; then
the ratios between modes.

    rsa bench --model DIR --load-format dummy --engine offline --modes lockstep,raw --out b.json
    rsa bench --model DIR --load-format dummy --engine async --modes barrier-free --out b.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import RSAConfig
from .seeds import derive_seed
from .types import Problem, Request

OFFLINE_MODES = ("lockstep", "raw")
ASYNC_MODES = ("barrier-free", "barrier-free-index")
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


class MemoryPeak:
    """Peak device memory in use (NVML, all processes on GPU 0) while the block runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
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
            self.peak = max(self.peak, self._read())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._read is not None:
            self.peak = max(self.peak, self._read())

    @property
    def gib(self) -> float | None:
        return round(self.peak / 2**30, 2) if self._read is not None else None


def _rsa_mode(engine: Any, problems: list[Problem], config: RSAConfig) -> dict[str, Any]:
    from ._background import run_sync
    from .loop import RSALoop as RSA

    before = (engine.prompt_tokens_sent, engine.cached_tokens)
    with MemoryPeak() as mem:
        started = time.perf_counter()
        results = run_sync(RSA(engine, config, progress=False).run(problems))
        wall = time.perf_counter() - started
    prompt = engine.prompt_tokens_sent - before[0]
    return {"wall_s": wall,
            "generated_tokens": sum(r.usage.completion_tokens for r in results),
            "prompt_tokens": prompt,
            "prefix_hit_rate": (engine.cached_tokens - before[1]) / max(1, prompt),
            "failed": sum(r.usage.failed for r in results),
            "generations": sum(m["requested"] for r in results for m in r.steps),
            "gpu_memory_gib": mem.gib}


def _raw_mode(llm: Any, batches: list[list[tuple[list[int], int]]], seed: int) -> dict[str, Any]:
    """Each recorded step's prompts and lengths as one plain `LLM.generate` call."""
    from vllm import SamplingParams, TokensPrompt

    generated = prompt = cached = 0
    with MemoryPeak() as mem:
        started = time.perf_counter()
        for t, batch in enumerate(batches):
            prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in batch]
            params = [SamplingParams(seed=derive_seed(seed, "raw", t, i), temperature=1.0,
                                     max_tokens=n, min_tokens=n, ignore_eos=True)
                      for i, (_, n) in enumerate(batch)]
            for out in llm.generate(prompts, sampling_params=params, use_tqdm=False):
                generated += len(out.outputs[0].token_ids)
                prompt += len(out.prompt_token_ids)
                cached += out.num_cached_tokens or 0
        wall = time.perf_counter() - started
    return {"wall_s": wall, "generated_tokens": generated, "prompt_tokens": prompt,
            "prefix_hit_rate": cached / max(1, prompt), "failed": 0,
            "generations": sum(len(b) for b in batches), "gpu_memory_gib": mem.gib}


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


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the requested modes; returns {mode: figures} (also merged into ``args.out``)."""
    from .engines.vllm import AsyncVLLMEngine, VLLMEngine

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    allowed = OFFLINE_MODES if args.engine == "offline" else ASYNC_MODES
    bad = [m for m in modes if m not in allowed]
    if bad or not modes:
        raise SystemExit(f"rsa bench: --modes for --engine {args.engine} must be among "
                         f"{', '.join(allowed)}; got {args.modes!r}")
    if "raw" in modes and "lockstep" not in modes:
        raise SystemExit("rsa bench: --modes raw replays what lockstep sent: list lockstep too")
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
    else:
        engine = AsyncVLLMEngine(args.model, n_per_request=False, **options)
    engine.supports_n = False  # one request per sample: each gets its own forced length
    _warm_up(engine)
    figures: dict[str, Any] = {"_setup": {
        "model": args.model, "load_format": args.load_format, "engine": args.engine,
        "problems": args.problems, "population": args.population,
        "aggregation_size": args.aggregation_size, "steps": args.steps,
        "max_tokens": args.max_tokens, "length_median": args.median, "length_sigma": args.sigma,
        "max_model_len": engine.max_model_len, "engine_start_s": time.perf_counter() - started}}
    for mode in modes:
        _reset_cache(engine)
        if mode == "lockstep":
            batches: list[list[tuple[list[int], int]]] = []
            real = engine.generate

            async def recording(requests: Sequence[Request]) -> Any:
                out = await real(requests)
                batches.append([(ids, n) for ids, n, _ in engine.last_batch])
                return out

            engine.generate = recording  # type: ignore[method-assign]
            figures[mode] = _rsa_mode(engine, problems, config.replace(lockstep=True))
            engine.generate = real  # type: ignore[method-assign]
            figures[mode]["generate_calls"] = len(batches)
        elif mode == "raw":
            figures[mode] = _raw_mode(engine.llm, batches, args.seed)
        else:
            order = "index" if mode.endswith("-index") else "drawn"
            figures[mode] = _rsa_mode(engine, problems, config.replace(candidate_order=order))
            figures[mode]["in_flight_max"] = engine.in_flight_max
        f = figures[mode]
        f["generated_tokens_per_s"] = f["generated_tokens"] / max(1e-9, f["wall_s"])
        print(f"[bench] {mode}: {_row(f)}", flush=True)
        if args.out:
            _merge(Path(args.out), {mode: f, f"_setup_{args.engine}": figures["_setup"]})
    if hasattr(engine, "aclose"):
        from ._background import run_sync

        run_sync(engine.aclose())
    return figures


def _row(f: dict[str, Any]) -> str:
    return (f"{f['wall_s']:.1f} s, {f['generated_tokens']} generated + {f['prompt_tokens']} prompt "
            f"tokens, {f['generated_tokens_per_s']:.0f} gen tok/s, prefix hits "
            f"{f['prefix_hit_rate']:.3f}, GPU {f['gpu_memory_gib']} GiB, failed {f['failed']}")


def _merge(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(new)
    data["ratios"] = ratios(data)
    path.write_text(json.dumps(data, indent=1))
    return data


def ratios(data: dict[str, Any]) -> dict[str, float]:
    """Wall-time and throughput ratios between the modes present (same token work)."""
    out: dict[str, float] = {}
    wall = {m: data[m]["wall_s"] for m in (*OFFLINE_MODES, *ASYNC_MODES) if m in data}
    if "lockstep" in wall and "raw" in wall:
        out["lockstep_over_raw_wall"] = wall["lockstep"] / wall["raw"]
    for m in ASYNC_MODES:
        if m in wall and "lockstep" in wall:
            out[f"lockstep_over_{m}_wall"] = wall["lockstep"] / wall[m]
        if m in wall and "raw" in wall:
            out[f"raw_over_{m}_wall"] = wall["raw"] / wall[m]
    return {k: round(v, 4) for k, v in out.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rsa bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--engine", choices=("offline", "async"), default="offline",
                   help="offline: vllm.LLM (modes lockstep, raw); async: AsyncLLM (modes "
                   "barrier-free, barrier-free-index)")
    p.add_argument("--modes", default=None, help="comma-separated modes (default: all of the "
                   "engine's)")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON file the figures are merged into")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rsa bench``."""
    args = build_parser().parse_args(argv)
    for name, low in (("problems", 1), ("population", 1), ("aggregation_size", 1), ("steps", 1),
                      ("max_tokens", 16), ("median", 1), ("max_model_len", 64)):
        if getattr(args, name) < low:
            raise SystemExit(f"rsa bench: --{name.replace('_', '-')} must be >= {low}, "
                             f"got {getattr(args, name)}")
    if args.aggregation_size > args.population:
        raise SystemExit(f"rsa bench: --aggregation-size must be between 1 and --population "
                         f"({args.population}), got {args.aggregation_size}")
    if args.modes is None:
        args.modes = ",".join(OFFLINE_MODES if args.engine == "offline" else ASYNC_MODES)
    figures = run_bench(args)
    data = json.loads(args.out.read_text()) if args.out and args.out.exists() else figures
    print(json.dumps({"ratios": data.get("ratios", ratios(data))}, indent=1))
    return 0
