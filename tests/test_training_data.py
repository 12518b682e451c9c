"""`rsa make-training-data` and `rsa_plugins.training_data` on a scripted reference model: the
mix, K distinct candidates from the pool, verl / TRL columns, ground truth, determinism, rewards
and bad input.  Real-model runs (and the commands of docs/training-data.md) are in
test_training_data_real.py."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fakes import ScriptedEngine, candidates_in, make_fake_llm, scripted_reply
from rsa_plugins import cli
from rsa_plugins import training_data as td
from rsa_plugins.config import ConfigError, RSAConfig
from rsa_plugins.seeds import derive_seed
from rsa_plugins.prompts import aggregation_prompt
from rsa_plugins.reasoning_gym import reasoning_gym_problems
from rsa_plugins.types import Problem

RSA = str(Path(sys.executable).parent / "rsa")
VERL_COLUMNS = {"data_source", "prompt", "ability", "reward_model", "extra_info"}
EXTRA_INFO = {"split", "index", "prompt_type", "problem_id", "answer_format", "k", "candidate_ids",
              "candidate_answers", "candidate_scores", "metadata"}
TRL_COLUMNS = {"prompt", "ground_truth", "prompt_type", "problem_id", "data_source",
               "answer_format", "index", "split", "k", "candidate_ids", "candidate_answers",
               "candidate_scores", "metadata"}


def math_problems(n: int, target: object = "42") -> list[Problem]:
    return [Problem(prompt=f"Problem {i}: what is 6 * 7? Put the answer in \\boxed{{}}.",
                    id=f"p{i}", target=target) for i in range(n)]


def build(problems: list[Problem], out: Path, engine: ScriptedEngine | None = None,
          layout: str = "verl", **config: object) -> tuple[td.BuildSummary, list[dict]]:
    engine = engine or ScriptedEngine()
    summary = td.make_training_data(problems, engine, out, td.TrainingDataConfig(**config),
                                    layout)
    return summary, td.read_rows(out)


def info(row: dict) -> dict:
    """The per-row bookkeeping of either layout."""
    return row["extra_info"] if "extra_info" in row else row


# ---------------------------------------------------------------------------- the mix

@pytest.mark.parametrize("mix, n, expected", [(0.5, 10, 5), (0.3, 10, 3), (1.0, 4, 4),
                                               (0.0, 4, 0), (0.5, 7, 4)])
def test_mix_gives_exactly_that_share_of_aggregation_rows(tmp_path: Path, mix: float, n: int,
                                                         expected: int) -> None:
    engine = ScriptedEngine()
    summary, rows = build(math_problems(n), tmp_path / "d.jsonl", engine, mix=mix,
                          aggregation_size=2, pool=3)
    prompt_types = [info(r)["prompt_type"] for r in rows]
    assert prompt_types.count("aggregation") == summary.aggregation == expected
    assert prompt_types.count("standard") == summary.standard == n - expected
    assert len(rows) == n
    # only aggregation problems are sampled: pool (3) samples each, nothing else
    assert summary.sampled == 3 * expected
    assert sum(r.n for r in engine.requests) == 3 * expected


def test_the_choice_of_rows_follows_ids_not_order(tmp_path: Path) -> None:
    problems = math_problems(12)
    _, rows = build(problems, tmp_path / "a.jsonl", mix=0.5, aggregation_size=2)
    shuffled = problems[:]
    random.Random(3).shuffle(shuffled)
    _, again = build(shuffled, tmp_path / "b.jsonl", mix=0.5, aggregation_size=2)

    def by_id(rs: list[dict]) -> dict:
        return {info(r)["problem_id"]: (info(r)["prompt_type"], info(r)["candidate_ids"])
                for r in rs}

    assert by_id(rows) == by_id(again)
    assert [info(r)["problem_id"] for r in again] == [p.id for p in shuffled]  # input order kept


# ---------------------------------------------------------------------------- K and the pool

def test_aggregation_rows_hold_k_distinct_pool_candidates_in_the_loops_prompt(
        tmp_path: Path) -> None:
    problems = math_problems(6)
    engine = ScriptedEngine()
    summary, rows = build(problems, tmp_path / "d.parquet", engine, mix=1.0, aggregation_size=3,
                          pool=5)
    assert summary.sampled == 30 and summary.failed_samples == 0
    per_problem = Counter(r.cache_key for r in engine.requests)
    view_cfg = RSAConfig(population=1, aggregation_size=1, steps=1)
    for row, p in zip(rows, problems):
        ex = row["extra_info"]
        assert ex["prompt_type"] == "aggregation" and ex["k"] == 3
        slots = [int(c.rsplit("/c", 1)[1]) for c in ex["candidate_ids"]]
        assert len(set(slots)) == 3 and all(0 <= s < 5 for s in slots)
        assert all(c.startswith(f"{p.id}/c") for c in ex["candidate_ids"])
        user = row["prompt"][-1]["content"]
        shown = candidates_in(user)
        assert len(shown) == 3
        assert per_problem[p.id] == 5  # the pool: 5 samples of the plain prompt
        # the shown candidates are the samples of those slots (seeds as the RSA loop's step 1)
        plain = [{"role": "user", "content": p.prompt}]
        assert shown == [scripted_reply(plain, derive_seed(0, p.id, 1, s)) for s in slots]
        # the exact prompt the RSA loop builds from those candidates (rsa_plugins.prompts)
        expected = aggregation_prompt(p, shown, view_cfg, "math")
        assert user == expected
        assert row["prompt"] == [{"role": "user", "content": expected}]
    # across problems, different subsets are drawn (not always the same K slots)
    assert len({tuple(r["extra_info"]["candidate_ids"][i][-1] for i in range(3))
                for r in rows}) > 1


def test_k_equal_to_pool_uses_every_sample_and_k1_uses_the_refine_wording(tmp_path: Path) -> None:
    _, rows = build(math_problems(3), tmp_path / "a.jsonl", mix=1.0, aggregation_size=4)
    for r in rows:
        assert sorted(r["extra_info"]["candidate_ids"]) == [f"{r['extra_info']['problem_id']}/c{i}"
                                                            for i in range(4)]
    _, rows = build(math_problems(3), tmp_path / "b.jsonl", mix=1.0, aggregation_size=1, pool=2)
    for r in rows:
        user = r["prompt"][-1]["content"]
        assert "---- Candidate ----" in user and "---- Solution 1 ----" not in user
        assert r["extra_info"]["k"] == 1


def test_candidate_correctness_is_recorded_not_filtered(tmp_path: Path) -> None:
    summary, rows = build(math_problems(8), tmp_path / "d.jsonl", mix=1.0, aggregation_size=4)
    scores = [s for r in rows for s in r["extra_info"]["candidate_scores"]]
    answers = [a for r in rows for a in r["extra_info"]["candidate_answers"]]
    assert len(scores) == 32  # no candidate dropped
    assert scores == [1.0 if a == "42" else 0.0 for a in answers]
    assert {"42", "41", "7"} >= set(answers) and 0.0 in scores and 1.0 in scores
    assert summary.candidate_accuracy == pytest.approx(sum(scores) / len(scores))


def test_failed_samples_shrink_k_and_an_empty_pool_falls_back_to_standard(tmp_path: Path) -> None:
    summary, rows = build(math_problems(6), tmp_path / "a.jsonl", ScriptedEngine(fail_every=2),
                          mix=1.0, aggregation_size=4)
    assert summary.failed_samples == 12
    assert all(r["extra_info"]["k"] == 2 for r in rows)  # 2 of 4 samples failed per problem
    assert summary.short == 6
    summary, rows = build(math_problems(2), tmp_path / "b.jsonl", ScriptedEngine(fail_every=1),
                          mix=1.0, aggregation_size=2)
    assert [r["extra_info"]["prompt_type"] for r in rows] == ["standard", "standard"]
    assert summary.aggregation == 0 and summary.short == 2


# ---------------------------------------------------------------------------- layouts

def test_verl_parquet_columns_and_types(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    problems = math_problems(4)
    _, rows = build(problems, tmp_path / "d.parquet", mix=0.5, aggregation_size=2, split="val")
    schema = pq.read_schema(tmp_path / "d.parquet")
    assert set(schema.names) == VERL_COLUMNS
    assert str(schema.field("prompt").type) == \
        "list<element: struct<role: string, content: string>>"
    assert str(schema.field("reward_model").type) == \
        "struct<style: string, ground_truth: string>"
    for i, row in enumerate(rows):
        assert set(row) == VERL_COLUMNS
        assert row["data_source"] == "rsa_plugins" and row["ability"] == "math"
        assert row["reward_model"] == {"style": "rule", "ground_truth": "42"}
        ex = row["extra_info"]
        assert set(ex) == EXTRA_INFO
        assert (ex["split"], ex["index"], ex["problem_id"], ex["answer_format"]) == \
            ("val", i, problems[i].id, "math")
        assert ex["prompt_type"] in ("standard", "aggregation")
        if ex["prompt_type"] == "standard":
            assert row["prompt"] == [{"role": "user", "content": problems[i].prompt}]
            assert (ex["k"], ex["candidate_ids"]) == (0, [])


def test_trl_layout_in_jsonl_and_parquet_agree(tmp_path: Path) -> None:
    problems = math_problems(5)
    _, jrows = build(problems, tmp_path / "d.jsonl", layout="trl", aggregation_size=2)
    _, prows = build(problems, tmp_path / "d.parquet", layout="trl", aggregation_size=2)
    assert jrows == prows
    for row, p in zip(jrows, problems):
        assert set(row) == TRL_COLUMNS
        assert row["ground_truth"] == "42" and row["problem_id"] == p.id
        assert isinstance(row["prompt"], list) and row["prompt"][-1]["role"] == "user"
        if row["prompt_type"] == "standard":
            assert row["prompt"][-1]["content"] == p.prompt
        else:
            assert "---- Solution 2 ----" in row["prompt"][-1]["content"]


def test_ground_truth_system_message_and_reasoning_gym_source_are_kept(tmp_path: Path) -> None:
    problems = [Problem(prompt="Give 3 + 4 in \\boxed{}.", id="n", target=7, system="Be brief."),
                Problem(prompt="Give the pair in \\boxed{}.", id="l", target=[1, 2])]
    _, rows = build(problems, tmp_path / "d.parquet", mix=0.0)
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["7", "[1, 2]"]
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    rg = td.reasoning_gym_training_problems(["basic_arithmetic"], 3, seed=4)
    _, rows = build(rg, tmp_path / "rg.parquet", mix=0.0)
    assert [r["reward_model"]["ground_truth"] for r in rows] == [p.target for p in rg]
    assert {r["data_source"] for r in rows} == {"reasoning_gym/basic_arithmetic"}
    assert {r["ability"] for r in rows} == {"reasoning"}
    meta = json.loads(rows[2]["extra_info"]["metadata"])
    assert meta == {"dataset": "basic_arithmetic", "index": 2, "seed": 4, "size": 3}


# ---------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_other_seed_other_rows(tmp_path: Path) -> None:
    problems = math_problems(10)
    build(problems, tmp_path / "a.jsonl", seed=1, aggregation_size=2, pool=4)
    build(problems, tmp_path / "b.jsonl", seed=1, aggregation_size=2, pool=4)
    build(problems, tmp_path / "c.jsonl", seed=2, aggregation_size=2, pool=4)
    a, b, c = ((tmp_path / f"{x}.jsonl").read_bytes() for x in "abc")
    assert a == b
    assert a != c
    build(problems, tmp_path / "a.parquet", seed=1, aggregation_size=2, pool=4)
    assert td.read_rows(tmp_path / "a.parquet") == td.read_rows(tmp_path / "a.jsonl")


# ---------------------------------------------------------------------------- rewards

def test_rewards_score_reasoning_gym_rows_like_the_problems_own_scorer(tmp_path: Path) -> None:
    problems = reasoning_gym_problems("basic_arithmetic", 3, seed=9)
    rg = td.reasoning_gym_training_problems(["basic_arithmetic"], 3, seed=9)
    _, rows = build(rg, tmp_path / "d.parquet", mix=0.0)
    for row, p in zip(rows, problems):
        truth = row["reward_model"]["ground_truth"]
        for text, answer in ((f"so <answer>{truth}</answer>", truth),
                             ("<answer>x1</answer>", "x1")):
            got = td.compute_score(row["data_source"], text, truth, row["extra_info"])
            assert got == p.scorer(answer, text, p)
        assert td.compute_score(row["data_source"], f"<answer>{truth}</answer>", truth,
                                row["extra_info"]) == 1.0
        assert td.compute_score(row["data_source"], "no tags", truth, row["extra_info"]) == 0.0


def test_trl_reward_takes_the_columns_grpo_passes(tmp_path: Path) -> None:
    _, rows = build(math_problems(3), tmp_path / "d.jsonl", layout="trl", aggregation_size=2)
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    completions = [[{"role": "assistant", "content": t}]
                   for t in ("\\boxed{42}", "\\boxed{41}", "so 42 it is: \\boxed{42.0}")]
    assert td.trl_reward(completions=completions, prompts=[r["prompt"] for r in rows],
                         **columns) == [1.0, 0.0, 1.0]


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("config, words", [
    (dict(mix=-0.1), ("mix", "between 0 and 1")),
    (dict(mix=1.5), ("mix", "between 0 and 1")),
    (dict(mix="half"), ("mix", "between 0 and 1")),
    (dict(aggregation_size=0), ("aggregation_size", ">= 1")),
    (dict(aggregation_size=4, pool=3), ("pool", ">= aggregation_size (4)")),
    (dict(max_tokens=0), ("max_tokens", ">= 1")),
    (dict(temperature=-1), ("temperature", ">= 0")),
    (dict(split=""), ("split", "non-empty")),
])
def test_bad_config_names_the_parameter_and_its_range(config: dict, words: tuple) -> None:
    with pytest.raises(ConfigError) as err:
        td.TrainingDataConfig(**config)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert str(err.value).startswith(words[0])


def test_bad_inputs_fail_before_any_sample(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    cases = [
        (math_problems(2), "d.csv", None, "out must end in .parquet or .jsonl"),
        (math_problems(2), "d.jsonl", "sft", "format must be one of verl, trl"),
        ([], "d.jsonl", None, "problems must not be empty"),
        ([Problem(prompt="q", id="x")], "d.jsonl", None, "has no target"),
        (math_problems(1) * 2, "d.jsonl", None, "appears twice"),
    ]
    for problems, name, layout, words in cases:
        with pytest.raises(ConfigError, match=words):
            td.make_training_data(problems, engine, tmp_path / name, layout=layout)
    assert engine.requests == []
    assert not list(tmp_path.iterdir())


def test_jsonl_problems_file(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "2+2? Use \\\\boxed{}.", "answer": 4, "id": "a"}\n\n'
                    '{"prompt": "Capital of France?", "target": "Paris", "kind": "general"}\n')
    problems = td.load_jsonl_problems(good)
    assert [(p.id, p.target, p.kind) for p in problems][0] == ("a", 4, "auto")
    assert problems[1].target == "Paris" and problems[1].id  # id from a hash of the prompt
    assert td.answer_format(problems[0]) == "math"
    for text, words in [('{"prompt": "q"}', "ground truth"), ("not json", "not valid JSON"),
                        ('{"target": 1}', "'prompt'"), ("", "no problems"),
                        ('{"prompt": "q", "answer": 1, "kind": "poem"}', "kind must be one of")]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text + "\n")
        with pytest.raises(ConfigError, match=words):
            td.load_jsonl_problems(bad)
    with pytest.raises(ConfigError, match="not found"):
        td.load_jsonl_problems(tmp_path / "missing.jsonl")


CLI_CASES = [
    (["--mix", "1.5"], "--mix: mix must be between 0 and 1, got 1.5"),
    (["--mix", "-0.5"], "--mix: mix must be between 0 and 1"),
    (["-K", "0"], "-K/--aggregation-size: aggregation_size must be an integer >= 1, got 0"),
    (["-K", "4", "--pool", "2"], "--pool: pool must be an integer >= aggregation_size (4), got 2"),
    (["--max-tokens", "0"], "--max-tokens: max_tokens must be >= 1"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--out", "data.csv"], "--out: out must end in .parquet or .jsonl"),
    (["--task", "rg:no_such_dataset"], "no_such_dataset"),
    (["--task", "gsm8k"], "unknown task 'gsm8k'"),
    (["--problems", "p.jsonl"], "give either --task"),
    (["--format", "sft"], "invalid choice: 'sft'"),
]


@pytest.mark.parametrize("extra, words", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_line_naming_the_flag(extra: list, words: str, tmp_path: Path
                                                   ) -> None:
    args = ["make-training-data", "--task", "rg:basic_arithmetic", "--out", "d.parquet",
            "--model", "openai/x"]
    if extra[0] in ("--out", "--task"):  # replace the default value of that flag
        i = args.index(extra[0])
        args[i + 1] = extra[1]
        extra = []
    proc = subprocess.run([RSA, *args, *extra], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                                             "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert not (tmp_path / "d.parquet").exists()


def test_cli_needs_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["make-training-data", "--out", str(tmp_path / "d.jsonl"), "--model", "x/y"])
    assert rc == 2
    assert "give either --task rg:DATASET or --problems FILE.jsonl" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the command

def test_cli_writes_trl_rows_from_a_problems_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    fake = make_fake_llm()
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"prompt": f"Q{i}: 6*7? Answer in \\boxed{{}}.",
                                            "answer": "42", "id": f"q{i}"}) + "\n"
                                for i in range(4)))
    out = tmp_path / "out" / "train.jsonl"
    rc = cli.main(["make-training-data", "--problems", str(problems), "--model", "fakellm/x",
                   "--format", "trl", "-K", "2", "--pool", "3", "--out", str(out),
                   "--no-progress", "--data-source", "toy"])
    assert rc == 0
    printed = capsys.readouterr().out
    rows = td.read_rows(out)
    assert [r["problem_id"] for r in rows] == ["q0", "q1", "q2", "q3"]
    assert sum(r["prompt_type"] == "aggregation" for r in rows) == 2
    assert {r["data_source"] for r in rows} == {"toy"}
    assert sum(c["n"] for c in fake.calls) == 6  # 2 aggregation problems x pool 3
    assert all(c["params"].get("max_tokens") == 8192 for c in fake.calls)
    assert f"wrote 4 rows (2 aggregation, 2 standard; trl layout) to {out}" in printed
    assert "reference candidates: 6 sampled, 0 failed" in printed


def test_cli_reasoning_gym_tasks_and_verl_parquet(tmp_path: Path) -> None:
    make_fake_llm(answers=("<answer>3</answer>",))
    out = tmp_path / "train.parquet"
    rc = cli.main(["make-training-data", "--task", "rg:basic_arithmetic", "--task",
                   "rg:chain_sum", "--limit", "3", "--model", "fakellm/x", "--mix", "1",
                   "-K", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    rows = td.read_rows(out)
    assert [r["data_source"] for r in rows] == ["reasoning_gym/basic_arithmetic"] * 3 + \
        ["reasoning_gym/chain_sum"] * 3
    assert all(r["extra_info"]["prompt_type"] == "aggregation" and r["extra_info"]["k"] == 2
               for r in rows)
    expected = [p.target for name in ("basic_arithmetic", "chain_sum")
                for p in reasoning_gym_problems(name, 3, 0)]
    assert [r["reward_model"]["ground_truth"] for r in rows] == expected
    # candidates were scored by reasoning-gym against the target: "3" is right only there
    for r, t in zip(rows, expected):
        assert r["extra_info"]["candidate_scores"] == [float(t == "3")] * 2
