"""Aggregation-aware RL training data (paper section 4): standard prompts mixed with aggregation
prompts whose K candidates were sampled from a frozen reference model.

`build` samples the candidates and builds the rows, `layouts` lays them out for verl or TRL and
writes them, `rewards` scores completions on them (verl's `compute_score`, TRL's `trl_reward`).
"""

from .build import (
    BuildSummary,
    TrainingDataConfig,
    amake_training_data,
    answer_format,
    assign_prompt_types,
    build_examples,
    check_unique_ids,
    draw_candidates,
    ground_truth,
    load_jsonl_problems,
    make_training_data,
    reasoning_gym_training_problems,
    sample_pools,
)
from .layouts import (
    ABILITY,
    AGGREGATION,
    LAYOUTS,
    Example,
    STANDARD,
    SUFFIXES,
    read_rows,
    resolve_output,
    to_trl,
    to_verl,
    write_rows,
)
from .rewards import compute_score, score_completion, trl_reward

__all__ = [
    "ABILITY", "AGGREGATION", "LAYOUTS", "STANDARD", "SUFFIXES", "BuildSummary", "Example",
    "TrainingDataConfig", "amake_training_data", "answer_format", "assign_prompt_types",
    "build_examples", "check_unique_ids", "compute_score", "draw_candidates", "ground_truth",
    "load_jsonl_problems", "make_training_data", "read_rows", "reasoning_gym_training_problems",
    "resolve_output", "sample_pools", "score_completion", "to_trl", "to_verl", "trl_reward",
    "write_rows",
]
