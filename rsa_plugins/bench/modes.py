"""The benchmark's modes: RSA (lockstep, barrier-free), the same work replayed raw, and the
bound (everything at once); each returns its figures (`rsa_plugins.bench.run` runs them)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..config import RSAConfig
from ..seeds import derive_seed
from ..types import Problem, Request
from .meters import MemoryPeak
from .workload import Batches, _forced


OFFLINE_MODES = ("lockstep", "raw")
ASYNC_RSA_MODES = ("barrier-free", "barrier-free-index", "barrier-free-spread")
ASYNC_MODES = (*ASYNC_RSA_MODES, "bound")
RSA_MODES = ("lockstep", *ASYNC_RSA_MODES)
MODES = (*OFFLINE_MODES, *ASYNC_MODES)


def _rsa_mode(engine: Any, problems: list[Problem], config: RSAConfig) -> dict[str, Any]:
    from .._background import run_sync
    from ..loop import RSALoop

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


def _replay_figures(outputs: list[Any], wall: float, mem: MemoryPeak) -> dict[str, Any]:
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    return {"wall_s": wall, "generated_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
            "prompt_tokens": prompt,
            "prefix_hit_rate": sum(o.num_cached_tokens or 0 for o in outputs) / max(1, prompt),
            "failed": 0, "generations": len(outputs), "gpu_memory_gib": mem.gib}


def raw_mode(llm: Any, batches: Batches, seed: int) -> dict[str, Any]:
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


def bound_mode(llm: Any, batches: Batches, seed: int) -> dict[str, Any]:
    """Every recorded request at once on `AsyncLLM`: no steps, nothing waits for anything."""
    from vllm import TokensPrompt

    from .._background import run_sync
    from ..engines.vllm import final_output

    async def one(i: int, ids: list[int], n: int) -> Any:
        return await final_output(llm, TokensPrompt(prompt_token_ids=ids),
                                  _forced(derive_seed(seed, "bound", i), n), f"bound-{i}")

    async def everything() -> list[Any]:
        flat = [x for batch in batches for x in batch]
        return list(await asyncio.gather(*(one(i, ids, n) for i, (ids, n) in enumerate(flat))))

    with MemoryPeak() as mem:
        started = time.perf_counter()
        outputs = run_sync(everything())
        wall = time.perf_counter() - started
    return _replay_figures(outputs, wall, mem)


def warm_up(engine: Any) -> None:
    """A small batch first, so no mode pays for the engine's first-call set-up."""
    from .._background import run_sync

    hook, engine.sampling_hook = engine.sampling_hook, None
    reqs = [Request(messages=[{"role": "user", "content": f"Count to {i}."}], seed=i,
                    max_tokens=32) for i in range(8)]
    run_sync(engine.generate(reqs))
    engine.sampling_hook = hook
    engine.prompt_tokens_sent = engine.cached_tokens = 0


def rsa_mode(mode: str, engine: Any, problems: list[Problem], config: RSAConfig
             ) -> dict[str, Any]:
    """One RSA mode (lockstep, barrier-free[-index|-spread]) on `engine`; with several engine
    cores, what each reported during the mode (``ranks``)."""
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
    return f


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


def reset_cache(engine: Any) -> None:
    from ..engines.vllm import AsyncVLLMEngine

    if isinstance(engine, AsyncVLLMEngine):
        from .._background import run_sync

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
