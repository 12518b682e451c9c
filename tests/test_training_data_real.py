"""`rsa make-training-data` on the real SmolLM2: the exact commands of docs/training-data.md, run
with the `rsa` executable, files read back and loaded with Hugging Face `datasets`."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from rsa_plugins import training_data as td
from rsa_plugins.reasoning_gym import reasoning_gym_problems
from test_cli import rsa_exe

pytestmark = pytest.mark.real

DOC = Path(__file__).resolve().parent.parent / "docs" / "training-data.md"
DOC_URL = "http://127.0.0.1:8000/v1"


#: the commands of docs/training-data.md, verbatim (checked against the page below)
DOC_COMMANDS = [
    "rsa make-training-data --task rg:basic_arithmetic --limit 4 --out data/rsa-train.parquet",
    "rsa make-training-data --problems problems.jsonl --model hosted_vllm/smollm2 --api-base "
    "http://127.0.0.1:8000/v1 --format trl -K 2 --pool 3 --max-tokens 64 "
    "--out data/rsa-train-trl.jsonl",
]


def doc_commands() -> list[list[str]]:
    """The `rsa make-training-data` lines of the docs page, split like a shell would."""
    lines = [ln for ln in DOC.read_text().splitlines() if ln.startswith("rsa make-training-data")]
    assert lines == DOC_COMMANDS
    return [shlex.split(ln) for ln in lines]


def doc_problems() -> str:
    """The example problems file of the docs page."""
    block = re.search(r"```jsonl\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    return block.group(1)


def run_cli(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "rsa"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    env.pop("RSA_DEBUG", None)
    return subprocess.run([*rsa_exe(), *argv[1:]], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def load_with_datasets(path: Path, builder: str) -> list[dict]:
    """The file as verl / TRL load it (Hugging Face `datasets`)."""
    import datasets

    ds = datasets.load_dataset(builder, data_files=str(path), split="train",
                               cache_dir=str(path.parent / "hf-cache"))
    return list(ds)


def test_docs_command_embedded_model_verl_parquet(smollm2_dir: Path, tmp_path: Path) -> None:
    argv = doc_commands()[0]
    assert "--model" not in argv  # the embedded SmolLM2, vLLM in this process
    proc = run_cli(argv, tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 4 rows (2 aggregation, 2 standard; verl layout)" in proc.stdout, proc.stdout
    out = tmp_path / "data" / "rsa-train.parquet"
    rows = td.read_rows(out)
    targets = [p.target for p in reasoning_gym_problems("basic_arithmetic", 4, 0)]
    assert [r["reward_model"]["ground_truth"] for r in rows] == targets
    assert {r["data_source"] for r in rows} == {"reasoning_gym/basic_arithmetic"}
    agg = [r for r in rows if r["extra_info"]["prompt_type"] == "aggregation"]
    assert len(agg) == 2
    for r in agg:
        ex = r["extra_info"]
        assert ex["k"] == 4 and len(set(ex["candidate_ids"])) == 4
        user = r["prompt"][-1]["content"]
        assert "---- Solution 4 ----" in user and "<answer>" in user
        # the candidates are the model's own samples: real, non-empty, not all the same (read
        # from the shipped prompt's own numbered blocks: this test checks that prompt)
        shown = re.findall(r"---- Solution \d+ ----\n(.*?)(?=\n\n---- Solution|\n\nNow )",
                           user, re.S)
        assert len(shown) == 4 and all(shown) and len(set(shown)) > 1
        # reasoning-gym scored every shown candidate
        assert all(0.0 <= s <= 1.0 for s in ex["candidate_scores"])
        assert len(ex["candidate_scores"]) == 4 and None not in ex["candidate_scores"]
    for r in rows:
        if r["extra_info"]["prompt_type"] == "standard":
            assert r["extra_info"]["k"] == 0 and "---- Solution" not in r["prompt"][-1]["content"]

    loaded = load_with_datasets(out, "parquet")
    assert loaded == rows
    row = rows[0]
    truth = row["reward_model"]["ground_truth"]
    for text, want in ((f"<answer>{truth}</answer>", 1.0), ("<answer>nope</answer>", 0.0)):
        assert td.compute_score(row["data_source"], text, truth, row["extra_info"]) == want


def test_docs_command_server_model_trl_jsonl(vllm_server, tmp_path: Path) -> None:
    argv = doc_commands()[1]
    assert DOC_URL in argv and f"hosted_vllm/{vllm_server.model_name}" in argv
    argv = [vllm_server.base_url if a == DOC_URL else a for a in argv]
    (tmp_path / "problems.jsonl").write_text(doc_problems())
    proc = run_cli(argv, tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 2 rows (1 aggregation, 1 standard; trl layout)" in proc.stdout, proc.stdout
    assert "reference candidates: 3 sampled, 0 failed" in proc.stdout
    out = tmp_path / "data" / "rsa-train-trl.jsonl"
    rows = td.read_rows(out)
    assert [(r["problem_id"], r["ground_truth"]) for r in rows] == [("q1", "391"), ("q2", "42")]
    agg = [r for r in rows if r["prompt_type"] == "aggregation"]
    assert len(agg) == 1 and agg[0]["k"] == 2
    assert len(agg[0]["candidate_scores"]) == 2 and None not in agg[0]["candidate_scores"]
    assert "---- Solution 2 ----" in agg[0]["prompt"][-1]["content"]
    assert all(r["answer_format"] == "math" for r in rows)

    loaded = load_with_datasets(out, "json")
    assert [r["prompt"] for r in loaded] == [r["prompt"] for r in rows]
    columns = {k: [r[k] for r in loaded] for k in loaded[0] if k != "prompt"}
    completions = [[{"role": "assistant", "content": "So \\boxed{391}"}]] * 2
    assert td.trl_reward(completions=completions, **columns) == [1.0, 0.0]
