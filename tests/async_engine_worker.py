"""Runs RSA on SmolLM2 through `AsyncVLLMEngine` (vLLM CPU) and prints what happened as JSON.

Used by tests/test_vllm_async_real.py: vLLM's engine processes start and stop with this process.
"""

from __future__ import annotations

import json
import os
import sys

MARK = "ASYNC-ENGINE "

if __name__ == "__main__":
    from rsa_plugins.embedded import cpu_env

    os.environ.update(cpu_env())
    import rsa_plugins
    from rsa_plugins._background import run_sync
    from rsa_plugins.engines.vllm import AsyncVLLMEngine
    from rsa_plugins.reasoning_gym import reasoning_gym_problems
    from rsa_plugins.types import Request

    def hook(req: Request) -> dict:
        # one slot of one problem gets an impossible sampling parameter: it alone must fail
        return {"top_k": -5} if req.seed == poison else {}

    engine = AsyncVLLMEngine(sys.argv[1], max_model_len=2048, dtype="float32",
                             enforce_eager=True, seed=0, sampling_hook=hook)
    problems = reasoning_gym_problems("basic_arithmetic", limit=3, seed=5)
    from rsa_plugins.seeds import derive_seed

    poison = derive_seed(0, problems[0].id, 2, 1)  # problem 0, step 2, slot 1
    free = rsa_plugins.run(problems, model=engine, population=4, aggregation_size=2, steps=2,
                           max_tokens=32, progress=False, candidate_order="index")
    figures = {"requests_free": engine.requests, "in_flight_max": engine.in_flight_max,
               "hit_rate": engine.prefix_hit_rate,
               "populations": [len(r.population) for r in free],
               "failed": [r.usage.failed for r in free],
               "errors": [c.completion.error for r in free for c in r.population
                          if c.completion.error],
               "parents_sorted": all(c.parents == sorted(c.parents) for r in free
                                     for c in r.population),
               "completion_tokens": [r.usage.completion_tokens for r in free]}
    poison = -1
    engine.in_flight_max = 0
    lock = rsa_plugins.run(problems, model=engine, population=4, aggregation_size=2, steps=2,
                           max_tokens=32, progress=False, lockstep=True)
    figures.update(requests_total=engine.requests, in_flight_max_lockstep=engine.in_flight_max,
                   failed_lockstep=[r.usage.failed for r in lock],
                   steps=[len(r.steps) for r in lock])
    run_sync(engine.aclose())
    print(MARK + json.dumps(figures), flush=True)
