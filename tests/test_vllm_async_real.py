"""The barrier-free `AsyncVLLMEngine` on the real SmolLM2 (vLLM's CPU build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def test_async_engine_runs_rsa_barrier_free_and_in_lockstep(smollm2_dir):
    out = subprocess.run([sys.executable, str(HERE / "async_engine_worker.py"), str(smollm2_dir)],
                         env=ENV, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("ASYNC-ENGINE "))
    f = json.loads(line.removeprefix("ASYNC-ENGINE "))
    # step 1: one request with n=4 per problem; step 2: 4 aggregation requests per problem,
    # less the poisoned one, which fails before it reaches vLLM
    assert f["requests_free"] == 3 * (1 + 4) - 1, f
    # barrier-free: problems' aggregation requests are in flight together
    assert f["in_flight_max"] > 4
    assert f["populations"] == [4, 4, 4]
    # the poisoned request failed alone, with vLLM's reason; the other 23 generations stand
    assert f["failed"] == [1, 0, 0]
    assert len(f["errors"]) == 1 and "top_k" in f["errors"][0]
    assert f["parents_sorted"]  # candidate_order="index"
    assert all(t > 0 for t in f["completion_tokens"])
    assert 0 < f["hit_rate"] <= 1  # aggregation prompts share the problem's prefix
    # lockstep through the same engine: the same number of requests, a whole step at once
    assert f["requests_total"] == f["requests_free"] + 3 * (1 + 4)
    assert f["in_flight_max_lockstep"] == 3 * 4
    assert f["failed_lockstep"] == [0, 0, 0] and f["steps"] == [2, 2, 2]
