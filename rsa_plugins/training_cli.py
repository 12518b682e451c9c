"""``rsa make-training-data``: its flags and its command (the building is `training_data`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from . import embedded, runs
from .config import ConfigError
from .reasoning_gym import TaskSpec
from .runs import CLIError

def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``make-training-data`` to the subcommands `sub` of ``rsa``."""
    p = sub.add_parser("make-training-data", help="aggregation-aware RL data for verl / TRL",
                       description="Build the paper's aggregation-aware RL dataset: standard "
                       "prompts mixed with aggregation prompts holding K candidates sampled from "
                       "a reference model, ground truth kept, in verl's or TRL's column layout "
                       "(parquet or JSONL).")
    runs.add_model_flags(p)
    g = p.add_argument_group("problems (one of)")
    g.add_argument("--task", action="append", metavar="rg:DATASET", help="reasoning-gym "
                   "dataset(s), e.g. rg:basic_arithmetic (repeat for several)")
    g.add_argument("--problems", type=Path, metavar="FILE.jsonl", help='JSONL rows of '
                   '{"prompt", "target" or "answer", "id"}')
    g.add_argument("--limit", type=int, default=20, help="problems per rg task (20)")
    g.add_argument("--task-seed", type=int, default=0, help="seed of the generated problems (0)")
    g = p.add_argument_group("mix")
    g.add_argument("--mix", type=float, default=0.5,
                   help="fraction of aggregation prompts, 0..1 (0.5, the paper's)")
    g.add_argument("-K", "--aggregation-size", type=int, default=4,
                   help="candidates per aggregation prompt (4)")
    g.add_argument("--pool", type=int, help="candidates sampled per aggregation problem, >= K "
                   "(default K)")
    g.add_argument("--seed", type=int, default=0, help="seed of the mix, draws and samples (0)")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, required=True, help="output file: .parquet or .jsonl")
    g.add_argument("--format", choices=("verl", "trl"), default="verl",
                   help="column layout (verl)")
    g.add_argument("--split", default="train", help="split recorded in the rows (train)")
    g.add_argument("--data-source", help="data_source of every row (default: "
                   "reasoning_gym/<dataset>, or rsa_plugins)")
    p.set_defaults(func=cmd_make_training_data)


def cmd_make_training_data(args: argparse.Namespace) -> int:
    """``rsa make-training-data``: mixed standard / aggregation rows for verl or TRL."""
    from . import training_data as td

    if bool(args.task) == (args.problems is not None):
        raise CLIError("give either --task rg:DATASET or --problems FILE.jsonl (one of them)")
    if args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}")
    small = runs.is_embedded(args.model)
    budget = embedded.RSA_DEFAULTS["max_tokens"] if small else None
    sampling = {"temperature": args.temperature, "top_p": args.top_p,
                "max_tokens": budget if args.max_tokens is None else args.max_tokens}
    try:
        config = td.TrainingDataConfig(
            mix=args.mix, aggregation_size=args.aggregation_size, pool=args.pool, seed=args.seed,
            split=args.split, data_source=args.data_source,
            **{k: v for k, v in sampling.items() if v is not None})
        td.resolve_output(args.out, args.format)
    except ConfigError as exc:
        raise CLIError(runs.flag_names(str(exc))) from None
    if args.problems is not None:
        problems, label = td.load_jsonl_problems(args.problems), str(args.problems)
    else:
        try:
            datasets = [TaskSpec.parse(t).dataset for t in args.task]
            problems = td.reasoning_gym_training_problems(datasets, args.limit, args.task_seed)
        except ValueError as exc:
            raise CLIError(f"--task: {exc}") from None
        label = ", ".join(args.task)
    model = runs.Model.resolve(args)
    print(f"rsa make-training-data: {label}, {len(problems)} problems, mix {config.mix:g}, "
          f"K={config.aggregation_size} from a pool of {config.pool}, reference model "
          f"{model.label}", file=sys.stderr)

    async def build() -> Any:
        engine = model.engine()
        try:
            return await td.amake_training_data(problems, engine, args.out, config,
                                                args.format, args.progress)
        finally:
            await engine.aclose()

    summary = asyncio.run(build())
    acc = summary.candidate_accuracy
    print(f"wrote {summary.rows} rows ({summary.aggregation} aggregation, {summary.standard} "
          f"standard; {summary.layout} layout) to {summary.path}")
    print(f"reference candidates: {summary.sampled} sampled, {summary.failed_samples} failed, "
          f"accuracy of those shown {'-' if acc is None else f'{acc:.1%}'}")
    if summary.short:
        print(f"note: {summary.short} aggregation row(s) got fewer than K candidates "
              "(failed samples)", file=sys.stderr)
    return 0
