"""Benchmark: RSA in lockstep over the in-process vLLM engine vs. raw ``LLM.generate`` per step.

One vLLM CPU engine (SmolLM2-135M) runs RSA on a few reasoning-gym problems.  Right
after each of RSA's ``LLM.generate`` calls, the same prompts are run again as one raw
``LLM.generate`` call forced to the same lengths (``min_tokens = max_tokens = length``,
``ignore_eos``; prefix caching off so the twin recomputes everything), so both see the same
machine load.  Printed: RSA wall time (twins excluded) / raw wall time (goal <= 1.05x), and
RSA wall time / time inside its own generate calls (the pure orchestration cost).  Only behaviour is asserted (one call per step, the same
token counts on both sides), never timings.

    pytest -m slow tests/benchmarks/test_bench_vllm_engine.py -s   # or run this file with python
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

PROBLEMS, N, K, T, MAX_TOKENS = 4, 4, 2, 3, 64
MARK = "BENCH-FIGURES "  # vLLM logs to stdout too


def bench(model_dir: str) -> dict:
    from rsa_plugins.embedded import cpu_env

    os.environ.update(cpu_env())
    from vllm import LLM, SamplingParams, TokensPrompt

    import rsa_plugins
    from rsa_plugins.engines.vllm import VLLMEngine
    from rsa_plugins.reasoning_gym import reasoning_gym_problems

    # no prefix caching: a replay would otherwise find every prompt already cached
    llm = LLM(model=model_dir, dtype="float32", max_model_len=2048, enforce_eager=True,
              max_num_batched_tokens=16384, enable_prefix_caching=False, seed=0)
    real_generate = llm.generate
    calls: list[list[tuple[list[int], int, float, int]]] = []  # per call: (ids, seed, temp, len)
    raw = {"wall": 0.0, "tokens": 0}
    per_call: list[tuple[float, float]] = []  # (RSA's call, its raw twin) seconds

    def replay(call: list[tuple[list[int], int, float, int]]) -> None:
        """The same prompts and lengths as one raw call (each sample forced to its length)."""
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids, *_ in call]
        params = [SamplingParams(n=1, seed=seed, temperature=temp, max_tokens=max(1, n_tok),
                                 min_tokens=max(1, n_tok), ignore_eos=True)
                  for _, seed, temp, n_tok in call]
        t0 = time.perf_counter()
        outs = real_generate(prompts, sampling_params=params, use_tqdm=False)
        raw["wall"] += time.perf_counter() - t0
        per_call[-1] = (per_call[-1][0], time.perf_counter() - t0)
        raw["tokens"] += sum(len(o.outputs[0].token_ids) for o in outs)

    def recording_generate(prompts, sampling_params=None, **kw):
        t0 = time.perf_counter()
        outs = real_generate(prompts, sampling_params=sampling_params, **kw)
        per_call.append((time.perf_counter() - t0, 0.0))
        call = [(list(p["prompt_token_ids"]), (sp.seed or 0) + k, sp.temperature,
                 len(c.token_ids))
                for p, sp, o in zip(prompts, sampling_params, outs)
                for k, c in enumerate(o.outputs)]
        calls.append(call)
        # the raw twin runs right after, so both see the same machine load; its time is
        # taken out of RSA's wall time below
        replay(call)
        return outs

    llm.generate = recording_generate  # type: ignore[method-assign]
    problems = reasoning_gym_problems("basic_arithmetic", limit=PROBLEMS, seed=7)
    real_generate(["warm up"], SamplingParams(max_tokens=16), use_tqdm=False)

    engine = VLLMEngine(llm)
    started = time.perf_counter()
    results = rsa_plugins.run(problems, model=engine, population=N, aggregation_size=K, steps=T,
                              max_tokens=MAX_TOKENS, progress=False)
    rsa_wall = time.perf_counter() - started - raw["wall"]
    inside = engine.generate_seconds - raw["wall"]  # engine's timer spans the twin too
    return {
        "problems": PROBLEMS, "population": N, "aggregation_size": K, "steps": T,
        "max_tokens": MAX_TOKENS,
        "generate_calls": engine.calls, "recorded_calls": len(calls),
        "generations_per_call": [len(c) for c in calls],
        "rsa_tokens": sum(max(1, x[3]) for c in calls for x in c),  # the replay makes >= 1
        "raw_tokens": raw["tokens"],
        "rsa_populations": [len(r.population) for r in results],
        "rsa_wall_s": round(rsa_wall, 3), "rsa_inside_generate_s": round(inside, 3),
        "raw_wall_s": round(raw["wall"], 3),
        "ratio_rsa_over_raw": round(rsa_wall / raw["wall"], 4),
        "ratio_rsa_over_its_generate_calls": round(rsa_wall / inside, 4),
        "per_call_rsa_vs_raw_s": [[round(a, 3), round(b, 3)] for a, b in per_call],
    }


@pytest.mark.real
@pytest.mark.benchmark
@pytest.mark.slow
def test_vllm_engine_overhead(smollm2_dir, show):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run([sys.executable, __file__, str(smollm2_dir)], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in reversed(out.stdout.splitlines()) if ln.startswith(MARK))
    figures = json.loads(line[len(MARK):])
    show("\nvLLM engine overhead:", json.dumps(figures, indent=1))
    show(f"RSA / raw LLM.generate on the same prompts and lengths: "
          f"{figures['ratio_rsa_over_raw']:.3f}x (goal <= 1.05x); RSA wall / its own generate "
          f"calls: {figures['ratio_rsa_over_its_generate_calls']:.4f}x")
    assert figures["generate_calls"] == figures["recorded_calls"] == T  # one call per step
    assert figures["generations_per_call"] == [PROBLEMS * N] * T
    assert figures["raw_tokens"] == figures["rsa_tokens"] > 0  # same work on both sides
    assert figures["rsa_populations"] == [N] * PROBLEMS


if __name__ == "__main__":
    print(MARK + json.dumps(bench(sys.argv[1])), flush=True)
