"""integrations/gpu: the Qwen3-4B-shaped checkpoint, the measurement pieces (their ``rsa bench``
and ``lm_eval`` arguments, the time budget) and the merge of the pieces' files afterwards.
The measurements themselves need an H200 (integrations/gpu/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_module

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "integrations" / "gpu"
measure = load_module(GPU / "measure.py")


def test_qwen4b_shape_writes_a_config_vllm_reads(smollm2_dir, tmp_path):
    out = tmp_path / "qwen4b"
    # the README's `python integrations/gpu/qwen4b_shape.py .gpu/qwen4b`, into a temporary dir
    subprocess.run([sys.executable, "integrations/gpu/qwen4b_shape.py", str(out),
                    "--tokenizer-from", str(smollm2_dir)], cwd=ROOT, check=True, timeout=120)
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"],
            config["vocab_size"]) == (36, 2560, 8, 49152)
    assert (out / "tokenizer.json").exists()
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(out).model_type == "qwen3"
    assert AutoTokenizer.from_pretrained(out)("2 + 2")["input_ids"]


def test_every_bench_piece_is_a_valid_rsa_bench_invocation(tmp_path):
    from rsa_plugins.bench.command import inherited_words, build_parser, pieces

    table = measure.pieces("/m", tmp_path)
    assert set(table) == {"offline", "async-light", "async-heavy", "async-heavy-2", "lmeval",
                          "lmeval-2"}
    for name, (seconds, argv) in table.items():
        assert 0 < seconds < 540  # each piece fits a call with room to spare
        if name.startswith("lmeval"):
            assert argv[:2] == ["-m", "rsa_plugins.adapters.lm_eval"] and "rsa-vllm" in argv
            continue
        first, *rest = pieces(argv[2:])  # after `-c CODE`
        parsed = [build_parser().parse_args(first)]
        parsed += [build_parser().parse_args(inherited_words(parsed[0]) + r) for r in rest]
        outs = [a.out for a in parsed]
        assert all(o is not None and o.parent == tmp_path for o in outs)
    offline = pieces(table["offline"][1][2:])
    assert len(offline) == 2 and "lockstep,raw" in offline[0] and "8192" in offline[1]


def test_pieces_that_do_not_fit_the_budget_are_skipped(tmp_path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert measure.run(["offline", "lmeval"], str(model), tmp_path / "out", budget=100) == 0
    record = json.loads((tmp_path / "out" / "measure.json").read_text())
    assert [(r["piece"], r["skipped"]) for r in record] == [("offline", True), ("lmeval", True)]
    with pytest.raises(SystemExit, match="unknown piece"):
        measure.run(["nope"], str(model), tmp_path / "out", budget=100)


def _mode(wall: float, settings: dict) -> dict:
    return {"wall_s": wall, "generated_tokens": 10, "engine": "x", "engine_settings": settings,
            "runs": [{"wall_s": wall, "generated_tokens": 10}]}


def test_merge_joins_offline_and_async_files_with_ratios_from_medians(tmp_path):
    budget = {"max_num_batched_tokens": 16384, "max_num_seqs": 1024}
    (tmp_path / "light_offline.json").write_text(json.dumps(
        {"_setup_offline": {"engine": "offline"}, "lockstep": _mode(25.0, budget),
         "raw": _mode(24.0, budget)}))
    (tmp_path / "light_async.json").write_text(json.dumps(
        {"_setup_async": {"engine": "async"}, "barrier-free": _mode(20.0, budget),
         "bound": _mode(18.0, budget)}))
    (tmp_path / "heavy_async.json").write_text(json.dumps({"barrier-free": _mode(150.0, budget)}))
    (tmp_path / "heavy_async_2.json").write_text(json.dumps(
        {"barrier-free": _mode(160.0, {**budget, "max_num_batched_tokens": 2048})}))
    # the README's `python integrations/gpu/measure.py merge RESULTS`
    subprocess.run([sys.executable, "integrations/gpu/measure.py", "merge", str(tmp_path)],
                   cwd=ROOT, check=True, timeout=120)
    light = json.loads((tmp_path / "light.json").read_text())
    assert light["ratios"]["lockstep_over_barrier-free_wall"] == 1.25
    assert light["ratios"]["barrier-free_over_bound_wall"] == round(20 / 18, 4)
    assert "_setup_offline" in light and "engine_settings_differ" not in light
    heavy = json.loads((tmp_path / "heavy.json").read_text())
    assert heavy["barrier-free"]["repeats"] == 2 and heavy["barrier-free"]["wall_s"] == 155.0
    # runs of one mode joined from calls that ran with different settings say so
    assert heavy["barrier-free"]["engine_settings_runs_differ"] == {
        "max_num_batched_tokens": {"heavy_async.json": 16384, "heavy_async_2.json": 2048}}
