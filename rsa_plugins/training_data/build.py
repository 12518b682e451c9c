"""Building aggregation-aware RL training data (paper section 4).

For every problem one training row is written.  A fraction `mix` of the rows (exactly
``round(mix * problems)``, which problems is decided by hashing) are *aggregation* rows: the
reference model samples a pool of M candidates for the problem (the RSA loop's first step), K
distinct ones are drawn from the pool and wrapped in the same aggregation prompt the RSA loop
sends (`rsa_plugins.prompts`).  The other rows are *standard* rows: the plain task prompt.  Both
keep the ground truth, so one outcome reward trains both.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._background import run_sync
from ..answers import detect_kind
from ..config import KINDS, RSAConfig
from ..engines.base import Engine
from ..loop import RSALoop
from ..prompts import aggregation_prompt, candidate_view
from ..seeds import derive_seed
from ..types import Candidate, Problem
from ..validate import ConfigError
from .layouts import (AGGREGATION, STANDARD, Example, resolve_output, to_trl, to_verl,
                      write_rows)


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
        if kind not in KINDS:
            raise ConfigError(f"{path}:{n}: kind must be one of {', '.join(KINDS)}; got {kind!r}")
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
    from ..reasoning_gym import reasoning_gym_problems

    return [p for name in datasets for p in reasoning_gym_problems(name, limit, seed)]


def check_unique_ids(problems: Sequence[Problem]) -> None:
    """Row keys are problem ids: refuse duplicates (naming the first one)."""
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise ConfigError(f"problem id {p.id!r} appears twice; ids must be unique")
        seen.add(p.id)


# ---------------------------------------------------------------------------- building

def assign_prompt_types(problems: Sequence[Problem], mix: float, seed: int) -> list[str]:
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


def build_examples(problems: Sequence[Problem], prompt_types: Sequence[str],
                   pools: dict[str, list[Candidate]], config: TrainingDataConfig
                   ) -> list[Example]:
    """One `Example` per problem; aggregation rows without any good candidate stay standard.

    ``data_source``: the config's, else ``reasoning_gym/<dataset>`` for reasoning-gym problems,
    else ``rsa_plugins``."""
    data_source = config.data_source
    view_config = RSAConfig(population=1, aggregation_size=1, steps=1)
    examples = []
    for i, (p, prompt_type) in enumerate(zip(problems, prompt_types)):
        fmt = answer_format(p)
        source = data_source or (f"reasoning_gym/{p.metadata['dataset']}"
                                 if fmt == "reasoning_gym" and "dataset" in p.metadata
                                 else "rsa_plugins")
        ex = Example(i, STANDARD, p, fmt, p.messages(), ground_truth(p.target), source)
        if prompt_type == AGGREGATION:
            chosen = draw_candidates(pools.get(p.id, []), config.aggregation_size,
                                     config.seed, p.id)
            if chosen:
                views = [candidate_view(c, view_config, p, fmt) for c in chosen]
                ex.prompt_type, ex.candidates = AGGREGATION, chosen
                ex.messages = p.messages(aggregation_prompt(p, views, view_config, fmt))
        examples.append(ex)
    return examples


async def sample_pools(engine: Engine, problems: Sequence[Problem], config: TrainingDataConfig,
                       progress: bool | None = None) -> dict[str, list[Candidate]]:
    """M samples of the plain prompt per problem from the reference model (RSA's first step,
    so seeds, batching and scoring are the loop's)."""
    if not problems:
        return {}
    results = await RSALoop(engine, config.sampling_config(), progress=progress).run(list(problems))
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
    prompt_types = assign_prompt_types(problems, config.mix, config.seed)
    wanted = [p for p, k in zip(problems, prompt_types) if k == AGGREGATION]
    pools = await sample_pools(engine, wanted, config, progress)
    examples = build_examples(problems, prompt_types, pools, config)
    rows = [to_verl(ex, config.split) if layout == "verl" else to_trl(ex, config.split)
            for ex in examples]
    write_rows(rows, path, layout, filetype)
    shown = [c.score for ex in examples for c in ex.candidates]
    scored = [s for s in shown if s is not None]
    agg = sum(ex.prompt_type == AGGREGATION for ex in examples)
    return BuildSummary(
        path=path, layout=layout, rows=len(rows), aggregation=agg, standard=len(rows) - agg,
        sampled=sum(len(v) for v in pools.values()),
        failed_samples=sum(not c.completion.ok for v in pools.values() for c in v),
        candidate_accuracy=sum(scored) / len(scored) if scored else None,
        short=sum(ex.prompt_type == AGGREGATION and len(ex.candidates) < config.aggregation_size
                  for ex in examples) + (len(wanted) - agg))


def make_training_data(problems: Sequence[Problem], engine: Engine, out: str | Path,
                       config: TrainingDataConfig | None = None, layout: str | None = None,
                       progress: bool | None = None) -> BuildSummary:
    """Synchronous `amake_training_data`."""
    return run_sync(amake_training_data(problems, engine, out, config, layout, progress))
