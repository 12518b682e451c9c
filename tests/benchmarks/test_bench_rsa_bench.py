"""`rsa bench` on the real SmolLM2 (vLLM's CPU build, random weights, tiny sizes).

The figures that matter come from the GPU (docs/performance.md); here the bench's behaviour is
checked: every mode does the same token work, lockstep makes one engine call per step, raw and
bound replay exactly what lockstep sent (bound from its saved file, in a process of its own), the ratios are computed
from the medians of repeats, both engines ran with the same scheduler settings (vLLM's offline
defaults), and ``--next`` runs a second workload on the same engine.  Prints the ratios, never
asserts on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# every mode of `rsa bench` on the real model: minutes on 2 cores, run with `pytest -m slow -n 0`
pytestmark = [pytest.mark.real, pytest.mark.slow]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@pytest.mark.benchmark
@pytest.mark.timeout(3000)  # two engines on a shared 2-core machine
def test_rsa_bench_modes_do_the_same_token_work(smollm2_dir, tmp_path, show):
    out, saved, other = tmp_path / "bench.json", tmp_path / "lockstep.json.gz", tmp_path / "b.json"
    # float32: CPUs without native bfloat16 (CI's) emulate it, about 5x slower here
    common = ["--model", str(smollm2_dir), "--load-format", "dummy", "--dtype", "float32",
              "--problems", "2", "-N", "4", "-K", "2", "-T", "2", "--max-tokens", "32",
              "--median", "16", "--sigma", "1", "--max-model-len", "2048", "--enforce-eager",
              "--out", str(out)]
    code = ("import os, sys\nfrom rsa_plugins.embedded import cpu_env\nos.environ.update(cpu_env())\n"
            "from rsa_plugins.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    # bound, first in its invocation (a process of its own), replays lockstep's saved requests
    for extra in (["--engine", "offline", "--modes", "lockstep,raw", "--save-batches", str(saved)],
                  ["--engine", "async", "--modes", "bound,barrier-free,barrier-free-index",
                   "--replay", str(saved), "--repeat", "2", "--next", "--median", "8",
                   "--modes", "barrier-free", "--repeat", "1", "--out", str(other)]):
        proc = subprocess.run([sys.executable, "-c", code, "bench", *common, *extra],
                              env=ENV, capture_output=True, text=True, timeout=1500)
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
    # both engines ran with the offline engine's scheduler budget: nothing to warn about
    settings = [data[m]["engine_settings"] for m in modes]
    assert all(s == settings[0] for s in settings) and settings[0]["max_num_seqs"] > 0
    assert "engine_settings_differ" not in data
    assert data["_setup_offline"]["engine_settings"] == data["_setup_async"]["engine_settings"]
    for m in ("bound", "barrier-free", "barrier-free-index"):  # --repeat 2
        f = data[m]
        assert f["repeats"] == 2 and len(f["runs"]) == 2
        assert f["wall_s_min"] <= f["wall_s"] <= f["wall_s_max"]
        assert {r["generated_tokens"] for r in f["runs"]} == {f["generated_tokens"]}
    assert data["lockstep"]["repeats"] == 1
    second = json.loads(other.read_text())  # the --next piece: another workload, same engine
    assert second["_setup_async"]["engine_reused"] and second["_setup_async"]["length_median"] == 8
    assert second["barrier-free"]["generations"] == 2 * 4 * 2
    assert second["barrier-free"]["generated_tokens"] < data["barrier-free"]["generated_tokens"]
    assert set(data["ratios"]) >= {"lockstep_over_raw_wall", "lockstep_over_barrier-free_wall",
                                   "barrier-free_over_bound_wall", "lockstep_over_bound_wall"}
