"""Training rows laid out for verl or TRL, written and read as parquet or JSONL."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..types import Candidate, Problem
from ..validate import ConfigError

LAYOUTS = ("verl", "trl")
SUFFIXES = (".parquet", ".jsonl")
#: verl's free-form ``ability`` column, per answer kind
ABILITY = {"math": "math", "code": "code", "multiple_choice": "multiple_choice",
           "reasoning_gym": "reasoning", "general": "general"}
#: the ``prompt_type`` column: a plain prompt, or an aggregation prompt holding K candidates
STANDARD, AGGREGATION = "standard", "aggregation"


@dataclass
class Example:
    """One training row before it is laid out for a framework."""

    index: int
    prompt_type: str  # "standard" or "aggregation"
    problem: Problem
    answer_format: str
    messages: list[dict[str, str]]
    ground_truth: str
    data_source: str
    candidates: list[Candidate] = field(default_factory=list)


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
        "extra_info": {"split": split, "index": ex.index, "prompt_type": ex.prompt_type,
                       "problem_id": ex.problem.id, "answer_format": ex.answer_format,
                       **_candidate_info(ex), "metadata": json.dumps(ex.problem.metadata,
                                                                     default=str)},
    }


def to_trl(ex: Example, split: str = "train") -> dict[str, Any]:
    """A row for TRL's GRPOTrainer: conversational ``prompt``; every other column reaches the
    reward functions as a keyword argument."""
    return {
        "prompt": ex.messages, "ground_truth": ex.ground_truth, "prompt_type": ex.prompt_type,
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
                ("split", pa.string()), ("index", pa.int64()), ("prompt_type", pa.string()),
                ("problem_id", pa.string()), ("answer_format", pa.string()), *cands,
                ("metadata", pa.string())]))])
    return pa.schema([
        ("prompt", pa.list_(message)), ("ground_truth", pa.string()), ("prompt_type", pa.string()),
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
