"""`rsa bench` on the real SmolLM2 (vLLM's CPU build, random weights, tiny sizes).

The figures that matter come from the GPU (docs/performance.md); here the bench's behaviour is
checked: every mode does the same token work, lockstep makes one engine call per step, raw and
bound replay exactly what lockstep sent (bound from its saved file, in a process of its own), and the
ratios are computed.  Prints the ratios, never asserts on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@pytest.mark.benchmark
def test_rsa_bench_modes_do_the_same_token_work(smollm2_dir, tmp_path, show):
    out, saved = tmp_path / "bench.json", tmp_path / "lockstep.json.gz"
    common = ["--model", str(smollm2_dir), "--load-format", "dummy", "--problems", "2", "-N",
              "4", "-K", "2", "-T", "2", "--max-tokens", "32", "--median", "16", "--sigma", "1",
              "--max-model-len", "2048", "--enforce-eager", "--out", str(out)]
    code = ("import os, sys\nfrom rsa_plugins.embedded import cpu_env\nos.environ.update(cpu_env())\n"
            "from rsa_plugins.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    # bound, first in its invocation (a process of its own), replays lockstep's saved requests
    for extra in (["--engine", "offline", "--modes", "lockstep,raw", "--save-batches", str(saved)],
                  ["--engine", "async", "--modes", "bound,barrier-free,barrier-free-index",
                   "--replay", str(saved)]):
        proc = subprocess.run([sys.executable, "-c", code, "bench", *common, *extra],
                              env=ENV, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    show("\nrsa bench (CPU, tiny):", json.dumps(data["ratios"]))
    modes = ("lockstep", "raw", "barrier-free", "barrier-free-index", "bound")
    assert all(m in data for m in modes)
    tokens = {data[m]["generated_tokens"] for m in modes}
    assert len(tokens) == 1 and tokens.pop() > 0  # forced lengths: the same work in every mode
    assert data["lockstep"]["generate_calls"] == 2  # one engine call per step
    assert all(data[m]["failed"] == 0 and data[m]["generations"] == 2 * 4 * 2 for m in modes)
    # raw and bound (from the file) sent exactly lockstep's prompts
    assert data["raw"]["prompt_tokens"] == data["lockstep"]["prompt_tokens"]
    assert data["bound"]["prompt_tokens"] == data["lockstep"]["prompt_tokens"]
    # lockstep never has more than one step inside the engine; bound has everything at once
    assert data["lockstep"]["engine_in_flight_max"] == 2 * 4
    assert data["bound"]["engine_in_flight_max"] == 2 * 4 * 2
    for m in modes:
        assert 0 < data[m]["engine_busy_fraction"] <= 1
        assert data[m]["engine_requests"] == data[m]["generations"]
    assert set(data["ratios"]) >= {"lockstep_over_raw_wall", "lockstep_over_barrier-free_wall",
                                   "barrier-free_over_bound_wall", "lockstep_over_bound_wall"}
