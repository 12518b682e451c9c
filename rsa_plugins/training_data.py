"""Aggregation-aware RL training data (paper section 4): standard prompts mixed with aggregation
prompts whose K candidates were sampled from a frozen reference model.

For every problem one training row is written.  A fraction `mix` of the rows (exactly
``round(mix * problems)``, which problems is decided by hashing) are *aggregation* rows: the
reference model samples a pool of M candidates for the problem (the RSA loop's first step), K
distinct ones are drawn from the pool and wrapped in the same aggregation prompt the RSA loop
sends (`rsa_plugins.prompts`).  The other rows are *standard* rows: the plain task prompt.  Both
keep the ground truth, so one outcome reward trains both.  Rows are written in the column layout
of verl (``data_source``, ``prompt``, ``ability``, ``reward_model``, ``extra_info``) or of TRL's
GRPOTrainer (``prompt`` plus flat columns that reach the reward functions), as parquet or JSONL.

`compute_score` (verl's custom reward signature) and `trl_reward` (TRL's) score completions on
these rows.  Nothing here imports a training framework.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._runner import run_sync
from .answers import detect_kind, equivalent, extract
from .config import ConfigError, RSAConfig
from .engines.base import Engine
from .loop import RSA, derive_seed
from .prompts import aggregation_prompt, candidate_view, messages
from .types import Candidate, Problem

LAYOUTS = ("verl", "trl")
SUFFIXES = (".parquet", ".jsonl")
#: verl's free-form ``ability`` column, per answer format
ABILITY = {"math": "math", "code": "code", "multiple_choice": "multiple_choice",
           "reasoning_gym": "reasoning", "general": "general"}
STANDARD, AGGREGATION = "standard", "aggregation"


@dataclass(frozen=True)
class TrainingDataConfig:
    """Settings of one build.

    mix: fraction of aggregation rows, in [0, 1] (paper: 0.5).  aggregation_size (K):
    candidates per aggregation prompt, >= 1 (paper: 4).  pool (M): candidates sampled per
    aggregation problem, K <= M (default K).  Sampling (temperature, top_p, max_tokens) applies
    to the reference model's candidates.
    """

    mix: float = 0.5
    aggregation_size: int = 4
    pool: int | None = None
    seed: int = 0
    temperature: float = 1.0
    top_p: float | None = None
    max_tokens: int | None = 8192
    split: str = "train"
    data_source: str | None = None

    def __post_init__(self) -> None:
        try:
            mix = float(self.mix)
        except (TypeError, ValueError):
            raise ConfigError(f"mix must be a number between 0 and 1, got {self.mix!r}") from None
        if not 0.0 <= mix <= 1.0:
            raise ConfigError(f"mix must be between 0 and 1, got {self.mix}")
        object.__setattr__(self, "mix", mix)
        k = self.aggregation_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"aggregation_size must be an integer >= 1, got {k!r}")
        pool = k if self.pool is None else self.pool
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < k:
            raise ConfigError(f"pool must be an integer >= aggregation_size ({k}), got {pool!r}")
        object.__setattr__(self, "pool", pool)
        if not self.split:
            raise ConfigError("split must be a non-empty string")
        self.sampling_config()  # temperature, top_p, max_tokens, seed: RSAConfig checks them

    def sampling_config(self) -> RSAConfig:
        """The RSA loop's settings for sampling the pools: one step of M samples."""
        return RSAConfig(population=self.pool or self.aggregation_size, aggregation_size=1,
                         steps=1, seed=self.seed, temperature=self.temperature, top_p=self.top_p,
                         max_tokens=self.max_tokens)


@dataclass
class Example:
    """One training row before it is laid out for a framework."""

    index: int
    kind: str  # "standard" or "aggregation"
    problem: Problem
    answer_format: str
    messages: list[dict[str, str]]
    ground_truth: str
    data_source: str
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class BuildSummary:
    """What a build wrote."""

    path: Path
    layout: str
    rows: int
    aggregation: int
    standard: int
    sampled: int
    failed_samples: int
    #: mean score of the candidates shown in aggregation prompts (None without a scorer)
    candidate_accuracy: float | None
    #: aggregation rows that got fewer than K candidates because samples failed
    short: int = 0


# ---------------------------------------------------------------------------- inputs

def load_jsonl_problems(path: str | Path) -> list[Problem]:
    """Problems from a JSONL file of ``{"prompt", "target" or "answer", "id"}`` rows.

    Optional keys: ``kind`` (answer format), ``system``, ``metadata``.  Every row needs a ground
    truth; ids must be unique (rows without one get a hash of the prompt).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"problems file not found: {path}")
    problems: list[Problem] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) \
                or not row["prompt"].strip():
            raise ConfigError(f"{path}:{n}: each row needs a non-empty string 'prompt'")
        target = row.get("target", row.get("answer"))
        if target is None:
            raise ConfigError(f"{path}:{n}: each row needs a ground truth ('target' or 'answer')")
        kind = row.get("kind", "auto")
        if kind not in (*ABILITY, "auto"):
            raise ConfigError(f"{path}:{n}: kind must be one of auto, {', '.join(ABILITY)}; "
                              f"got {kind!r}")
        problems.append(Problem(prompt=row["prompt"], id=str(row.get("id") or ""), target=target,
                                kind=kind, system=row.get("system"),
                                metadata=dict(row.get("metadata") or {})))
    if not problems:
        raise ConfigError(f"{path}: no problems in the file")
    return problems


def reasoning_gym_training_problems(datasets: Sequence[str], limit: int, seed: int = 0
                                    ) -> list[Problem]:
    """`limit` reasoning-gym problems of each dataset; metadata records what a reward function
    needs to rebuild the entry and score with reasoning-gym (dataset, seed, index, size)."""
    from .reasoning_gym import reasoning_gym_problems

    return [p for name in datasets for p in reasoning_gym_problems(name, limit, seed)]


def check_unique_ids(problems: Sequence[Problem]) -> None:
    """Row keys are problem ids: refuse duplicates (naming the first one)."""
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise ConfigError(f"problem id {p.id!r} appears twice; ids must be unique")
        seen.add(p.id)


def resolve_output(out: str | Path, layout: str | None = None) -> tuple[Path, str, str]:
    """(path, layout, file type) from `out`'s suffix (.parquet / .jsonl) and `layout`."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"out must end in .parquet or .jsonl, got {str(path)!r}")
    layout = layout or "verl"
    if layout not in LAYOUTS:
        raise ConfigError(f"format must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        # checked before any sampling, so no generations are lost to a missing writer
        raise ImportError("parquet output needs pyarrow: pip install pyarrow (or write .jsonl)")
    return path, layout, suffix[1:]


# ---------------------------------------------------------------------------- building

def assign_kinds(problems: Sequence[Problem], mix: float, seed: int) -> list[str]:
    """Exactly ``round(mix * n)`` aggregation rows; which ones comes from a hash of each id,
    so the choice does not depend on the order of the problems."""
    n_agg = round(mix * len(problems))
    ranked = sorted(range(len(problems)),
                    key=lambda i: (derive_seed(seed, problems[i].id, "training-kind"), i))
    chosen = set(ranked[:n_agg])
    return [AGGREGATION if i in chosen else STANDARD for i in range(len(problems))]


def draw_candidates(pool: Sequence[Candidate], k: int, seed: int, problem_id: str
                    ) -> list[Candidate]:
    """K distinct candidates of the pool's successful samples (fewer if fewer succeeded)."""
    alive = [c for c in pool if c.completion.ok]
    rng = random.Random(derive_seed(seed, problem_id, "training-subset"))
    return [alive[i] for i in rng.sample(range(len(alive)), min(k, len(alive)))]


def answer_format(problem: Problem) -> str:
    """The answer format of a problem (its own, else detected from the prompt)."""
    return problem.kind if problem.kind != "auto" else detect_kind(problem.prompt, problem.choices)


def ground_truth(target: Any) -> str:
    """The ground truth as the string verl and TRL rows carry."""
    return target if isinstance(target, str) else json.dumps(target)


def build_examples(problems: Sequence[Problem], kinds: Sequence[str],
                   pools: dict[str, list[Candidate]], config: TrainingDataConfig
                   ) -> list[Example]:
    """One `Example` per problem; aggregation rows without any good candidate stay standard.

    ``data_source``: the config's, else ``reasoning_gym/<dataset>`` for reasoning-gym problems,
    else ``rsa_plugins``."""
    data_source = config.data_source
    view_config = RSAConfig(population=1, aggregation_size=1, steps=1)
    examples = []
    for i, (p, kind) in enumerate(zip(problems, kinds)):
        fmt = answer_format(p)
        source = data_source or (f"reasoning_gym/{p.metadata['dataset']}"
                                 if fmt == "reasoning_gym" and "dataset" in p.metadata
                                 else "rsa_plugins")
        ex = Example(i, STANDARD, p, fmt, messages(p, p.prompt), ground_truth(p.target), source)
        if kind == AGGREGATION:
            chosen = draw_candidates(pools.get(p.id, []), config.aggregation_size,
                                     config.seed, p.id)
            if chosen:
                views = [candidate_view(c, view_config, fmt) for c in chosen]
                ex.kind, ex.candidates = AGGREGATION, chosen
                ex.messages = messages(p, aggregation_prompt(p, views, view_config, fmt))
        examples.append(ex)
    return examples


async def sample_pools(engine: Engine, problems: Sequence[Problem], config: TrainingDataConfig,
                       progress: bool | None = None) -> dict[str, list[Candidate]]:
    """M samples of the plain prompt per problem from the reference model (RSA's first step,
    so seeds, batching and scoring are the loop's)."""
    if not problems:
        return {}
    results = await RSA(engine, config.sampling_config(), progress=progress).run(list(problems))
    return {r.problem.id: r.population for r in results}


async def amake_training_data(problems: Sequence[Problem], engine: Engine, out: str | Path,
                              config: TrainingDataConfig | None = None,
                              layout: str | None = None,
                              progress: bool | None = None) -> BuildSummary:
    """Sample candidates with `engine`, build the mixed rows and write them to `out`."""
    config = config or TrainingDataConfig()
    path, layout, filetype = resolve_output(out, layout)
    if not problems:
        raise ConfigError("problems must not be empty")
    for p in problems:
        if p.target is None:
            raise ConfigError(f"problem {p.id!r} has no target: training rows need a ground truth")
    check_unique_ids(problems)
    kinds = assign_kinds(problems, config.mix, config.seed)
    wanted = [p for p, k in zip(problems, kinds) if k == AGGREGATION]
    pools = await sample_pools(engine, wanted, config, progress)
    examples = build_examples(problems, kinds, pools, config)
    rows = [to_verl(ex, config.split) if layout == "verl" else to_trl(ex, config.split)
            for ex in examples]
    write_rows(rows, path, layout, filetype)
    shown = [c.score for ex in examples for c in ex.candidates]
    scored = [s for s in shown if s is not None]
    agg = sum(ex.kind == AGGREGATION for ex in examples)
    return BuildSummary(
        path=path, layout=layout, rows=len(rows), aggregation=agg, standard=len(rows) - agg,
        sampled=sum(len(v) for v in pools.values()),
        failed_samples=sum(not c.completion.ok for v in pools.values() for c in v),
        candidate_accuracy=sum(scored) / len(scored) if scored else None,
        short=sum(ex.kind == AGGREGATION and len(ex.candidates) < config.aggregation_size
                  for ex in examples) + (len(wanted) - agg))


def make_training_data(problems: Sequence[Problem], engine: Engine, out: str | Path,
                       config: TrainingDataConfig | None = None, layout: str | None = None,
                       progress: bool | None = None) -> BuildSummary:
    """Synchronous `amake_training_data`."""
    return run_sync(amake_training_data(problems, engine, out, config, layout, progress))


# ---------------------------------------------------------------------------- layouts

def _candidate_info(ex: Example) -> dict[str, Any]:
    return {
        "k": len(ex.candidates),
        "candidate_ids": [f"{ex.problem.id}/c{c.slot}" for c in ex.candidates],
        "candidate_answers": [None if c.answer is None else str(c.answer) for c in ex.candidates],
        "candidate_scores": [c.score for c in ex.candidates],
    }


def to_verl(ex: Example, split: str = "train") -> dict[str, Any]:
    """A row of verl's RL dataset (what ``data.train_files`` parquet rows hold)."""
    return {
        "data_source": ex.data_source,
        "prompt": ex.messages,
        "ability": ABILITY.get(ex.answer_format, "general"),
        "reward_model": {"style": "rule", "ground_truth": ex.ground_truth},
        "extra_info": {"split": split, "index": ex.index, "kind": ex.kind,
                       "problem_id": ex.problem.id, "answer_format": ex.answer_format,
                       **_candidate_info(ex), "metadata": json.dumps(ex.problem.metadata,
                                                                     default=str)},
    }


def to_trl(ex: Example, split: str = "train") -> dict[str, Any]:
    """A row for TRL's GRPOTrainer: conversational ``prompt``; every other column reaches the
    reward functions as a keyword argument."""
    return {
        "prompt": ex.messages, "ground_truth": ex.ground_truth, "kind": ex.kind,
        "problem_id": ex.problem.id, "data_source": ex.data_source,
        "answer_format": ex.answer_format, "index": ex.index, "split": split,
        **_candidate_info(ex), "metadata": json.dumps(ex.problem.metadata, default=str),
    }


def _schema(layout: str) -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    cands = [("k", pa.int64()), ("candidate_ids", pa.list_(pa.string())),
             ("candidate_answers", pa.list_(pa.string())),
             ("candidate_scores", pa.list_(pa.float64()))]
    if layout == "verl":
        return pa.schema([
            ("data_source", pa.string()), ("prompt", pa.list_(message)), ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            ("extra_info", pa.struct([
                ("split", pa.string()), ("index", pa.int64()), ("kind", pa.string()),
                ("problem_id", pa.string()), ("answer_format", pa.string()), *cands,
                ("metadata", pa.string())]))])
    return pa.schema([
        ("prompt", pa.list_(message)), ("ground_truth", pa.string()), ("kind", pa.string()),
        ("problem_id", pa.string()), ("data_source", pa.string()),
        ("answer_format", pa.string()), ("index", pa.int64()), ("split", pa.string()), *cands,
        ("metadata", pa.string())])


def write_rows(rows: list[dict[str, Any]], path: Path, layout: str, filetype: str) -> None:
    """Write `rows` as parquet (fixed schema per layout) or JSONL, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if filetype == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("parquet output needs pyarrow: pip install pyarrow "
                          "(or write .jsonl)") from None
    pq.write_table(pa.Table.from_pylist(rows, schema=_schema(layout)), path)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a file written by `write_rows` (parquet or JSONL)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() == ".jsonl":
        return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


# ---------------------------------------------------------------------------- rewards

@lru_cache(maxsize=64)
def _rg_dataset(name: str, seed: int, size: int) -> Any:
    import reasoning_gym

    return reasoning_gym.create_dataset(name, size=size, seed=seed)


def score_completion(text: str, ground_truth: str, answer_format: str = "general",
                     metadata: str | dict[str, Any] | None = None) -> float:
    """1.0 when `text` commits to the ground truth, else 0.0 (partial credit from
    reasoning-gym's own scorer for problems generated by reasoning-gym)."""
    answer = extract(text, answer_format)
    meta = json.loads(metadata) if isinstance(metadata, str) else (metadata or {})
    if answer_format == "reasoning_gym" and {"dataset", "seed", "index"} <= meta.keys():
        index = int(meta["index"])
        data = _rg_dataset(meta["dataset"], int(meta["seed"]), int(meta.get("size", index + 1)))
        return float(data.score_answer(answer, data[index]))
    return float(equivalent(answer, ground_truth, answer_format))


def compute_score(data_source: str, solution_str: str, ground_truth: str,
                  extra_info: dict[str, Any] | None = None, **_: Any) -> float:
    """verl custom reward (``custom_reward_function.name=compute_score``); `data_source` is
    not needed, the row's answer format and metadata say how to score."""
    info = extra_info or {}
    return score_completion(solution_str, ground_truth, info.get("answer_format", "general"),
                            info.get("metadata"))


def trl_reward(completions: list[Any], ground_truth: list[str], answer_format: list[str],
               metadata: list[str], **_: Any) -> list[float]:
    """TRL GRPOTrainer reward function; conversational completions are lists of messages."""
    texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
    return [score_completion(t, g, f, m)
            for t, g, f, m in zip(texts, ground_truth, answer_format, metadata)]
