"""Running ``rsa bench``: one engine, the modes asked for, each ``--repeat`` times (rounds of
every mode, so drift hits all alike), figures merged into ``--out`` after every run, medians
and spreads, and the engine settings each mode ran with."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ..config import RSAConfig
from ..engines.vllm_base import differing_settings
from .meters import MeteredAsyncLLM, MeteredLLM, MeteredOfflineLLM
from .modes import (MODES, RSA_MODES, bound_mode, check_modes, raw_mode, ratios, reset_cache,
                    rsa_mode, warm_up)
from .workload import Batches, HeavyTail, load_batches, save_batches, synthetic_problems, workload

#: arguments that decide how the engine is built: invocations sharing a `BenchEngine` agree
ENGINE_ARGS = ("model", "engine", "load_format", "max_model_len", "dtype", "seed",
               "gpu_memory_utilization", "enforce_eager", "data_parallel_size",
               "max_num_batched_tokens", "max_num_seqs")


class BenchEngine:
    """The engine a bench runs on (`VLLMEngine` or `AsyncVLLMEngine`), metered, warmed up, with
    the settings vLLM runs it with.  Several invocations in one process (several workloads)
    may share one: the engine then starts once."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..engines.vllm import AsyncVLLMEngine, VLLMEngine

        self.key = {k: getattr(args, k, None) for k in ENGINE_ARGS}
        options: dict[str, Any] = {"max_model_len": args.max_model_len, "dtype": args.dtype,
                                   "seed": args.seed, "enable_prefix_caching": True}
        for name in ("load_format", "gpu_memory_utilization", "max_num_batched_tokens",
                     "max_num_seqs"):
            if getattr(args, name, None):
                options[name] = getattr(args, name)
        if args.enforce_eager:
            options["enforce_eager"] = True
        started = time.perf_counter()
        if args.engine == "offline":
            self.engine: Any = VLLMEngine(args.model, **options)
            self.llm: MeteredLLM = MeteredOfflineLLM(self.engine.llm)
        else:
            if args.data_parallel_size > 1:
                options["data_parallel_size"] = args.data_parallel_size
            self.engine = AsyncVLLMEngine(args.model, n_per_request=False, **options)
            self.llm = MeteredAsyncLLM(self.engine.llm)
        self.engine.llm = self.llm
        self.engine.supports_n = False  # one request per sample: each gets its own forced length
        warm_up(self.engine)
        self.start_s = time.perf_counter() - started
        self.settings = self.engine.engine_settings()
        self.used = 0  # invocations run on it

    def close(self) -> None:
        """Stop vLLM's engine processes (the async engine; the offline one ends with us)."""
        if hasattr(self.engine, "aclose"):
            from .._background import run_sync

            self.engine.llm = self.llm._llm
            run_sync(self.engine.aclose())


def run_bench(args: argparse.Namespace, shared: BenchEngine | None = None) -> dict[str, Any]:
    """Run the requested modes ``args.repeat`` times each; returns {mode: figures} (medians
    over the runs, every run under ``runs``), also merged into ``args.out`` after each run.
    `shared`: an engine built earlier in this process (else one is built and stopped here)."""
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    check_modes(modes, args.engine, args.replay is not None)
    if shared is not None and shared.key != {k: getattr(args, k, None) for k in ENGINE_ARGS}:
        raise SystemExit("rsa bench: a shared engine needs the same engine arguments")
    work = workload(args)
    replayed = load_batches(args.replay, work) if args.replay is not None else None
    problems = synthetic_problems(args.problems, args.seed)
    config = RSAConfig(population=args.population, aggregation_size=args.aggregation_size,
                       steps=args.steps, seed=args.seed, max_tokens=args.max_tokens, view="full",
                       tail_tokens=args.max_tokens)
    bench = shared if shared is not None else BenchEngine(args)
    engine, llm = bench.engine, bench.llm
    engine.sampling_hook = HeavyTail(args.median, args.sigma, args.max_tokens).forced
    repeat = getattr(args, "repeat", 1) or 1
    setup = {"model": args.model, "load_format": args.load_format, "engine": args.engine,
             **work, "max_model_len": engine.max_model_len,
             "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
             "data_parallel_size": getattr(engine, "data_parallel_size", 1),
             "engine_start_s": bench.start_s if bench.used == 0 else 0.0,
             "engine_reused": bench.used > 0, "repeat": repeat,
             "engine_settings": bench.settings, "argv": getattr(args, "argv", None)}
    bench.used += 1
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    figures: dict[str, Any] = {"_setup": setup}
    recorded: dict[str, Batches] = {}
    try:
        for r in range(repeat):
            for mode in modes:
                reset_cache(engine)
                llm.restart()
                if mode == "raw":
                    f = raw_mode(llm, recorded.get("lockstep") or replayed or [], args.seed)
                elif mode == "bound":
                    source = recorded[next(reversed(recorded))] if recorded else replayed
                    f = bound_mode(llm, source or [], args.seed)
                else:
                    f = rsa_mode(mode, engine, problems, config)
                    recorded[mode] = [list(b) for b in llm.batches]
                    if mode == "lockstep":
                        f["generate_calls"] = len(llm.batches)
                        if args.save_batches and r == 0:
                            save_batches(args.save_batches, recorded[mode], work)
                f.update({f"engine_{k}": v for k, v in llm.clock.snapshot().items()})
                f["generated_tokens_per_s"] = f["generated_tokens"] / max(1e-9, f["wall_s"])
                runs[mode].append(f)
                figures[mode] = summarize(runs[mode], args.engine, bench.settings)
                print(f"[bench] {mode} (run {r + 1}/{repeat}): {_row(f)}", flush=True)
                if args.out:
                    _merge(Path(args.out), {mode: figures[mode], f"_setup_{args.engine}": setup})
    finally:
        if shared is None:
            bench.close()
    for mode in modes:
        print(f"[bench] {mode}: {spread(figures[mode])}", flush=True)
    return figures


def summarize(runs: list[dict[str, Any]], engine: str, settings: dict[str, Any]
              ) -> dict[str, Any]:
    """One mode's figures over its runs: every number is the median over the runs (the wall
    time also its min and max); the rest from the first run; each run's own under ``runs``."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        values = [r.get(key) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = statistics.median(values)
    walls = [r["wall_s"] for r in runs]
    out.update(repeats=len(runs), wall_s_min=min(walls), wall_s_max=max(walls),
               engine=engine, engine_settings=settings,
               runs=[{k: v for k, v in r.items() if k != "ranks"} for r in runs])
    return out


def spread(f: dict[str, Any]) -> str:
    """``median (min-max) of R runs`` for a mode's wall time."""
    return (f"wall {f['wall_s']:.2f} s, median ({f['wall_s_min']:.2f}-{f['wall_s_max']:.2f}) "
            f"of {f['repeats']} run(s)")


def _row(f: dict[str, Any]) -> str:
    return (f"{f['wall_s']:.1f} s, {f['generated_tokens']} generated + {f['prompt_tokens']} prompt "
            f"tokens, {f['generated_tokens_per_s']:.0f} gen tok/s, prefix hits "
            f"{f['prefix_hit_rate']:.3f}, engine busy {f['engine_busy_fraction']}, in flight "
            f"{f['engine_in_flight_mean']} mean / {f['engine_in_flight_max']} max, GPU "
            f"{f['gpu_memory_gib']} GiB, failed {f['failed']}")


def _merge(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """Merge figures into the JSON file; ratios from the medians; a warning (printed once per
    difference and kept in the file) when its modes ran with different engine settings."""
    data = json.loads(path.read_text()) if path.exists() else {}
    seen = data.get("engine_settings_differ", {})
    data.update(new)
    data["ratios"] = ratios(data)
    differ = differing_settings({m: data[m]["engine_settings"] for m in MODES
                                 if m in data and "engine_settings" in data[m]})
    data.pop("engine_settings_differ", None)
    if differ:
        data["engine_settings_differ"] = differ
        if differ != seen:
            warn_differ(path, differ)
    path.write_text(json.dumps(data, indent=1))
    return data


def warn_differ(where: Path | str, differ: dict[str, dict[str, Any]]) -> None:
    """One line on stderr naming the engine settings on which the compared modes disagree."""
    said = "; ".join(f"{key} " + ", ".join(f"{m} {v}" for m, v in by_mode.items())
                     for key, by_mode in differ.items())
    print(f"rsa bench: warning: the modes in {where} ran with different engine settings "
          f"({said}): their ratios compare unlike engines", file=sys.stderr, flush=True)


__all__ = ["BenchEngine", "RSA_MODES", "run_bench", "spread", "summarize", "warn_differ"]
