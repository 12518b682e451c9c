"""Accuracy study: single sample, majority vote, self-refinement and RSA on reasoning-gym tasks.

One command runs every method on every task through the library's own loop, on ONE engine (the
model loads once), and writes per-problem, per-step correctness for `analyze.py`:

    python integrations/accuracy/study.py --out runs/study                # embedded SmolLM2 (CPU)
    python integrations/accuracy/study.py --model vllm:/path/to/model --out runs/gpu ...

Methods (the same as ``rsa eval --compare``, built by `rsa_plugins.runs.compare_configs`):
majority vote over N*T independent samples, self-refinement (K=1, N, T), RSA (N, K, T); the
single-sample baseline is the mean accuracy of majority vote's N*T first samples.  All tasks'
problems go through each method in one run (big batches); traces are checkpoints, so running
the same command again resumes.  Output in ``--out``: ``trace-<method>.jsonl`` and
``study.json`` (settings, tokens, timings, and per problem: final correctness and per step the
correctness of every population member).  Needs only rsa_plugins, vllm (or a server model),
reasoning-gym and math-verify: no plotting here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

try:
    import rsa_plugins  # noqa: F401
except ImportError:  # a source checkout without `pip install`: use the repository's copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rsa_plugins.config import ConfigError, RSAConfig  # noqa: E402

#: the study's tasks: reasoning-gym dataset -> config; easy settings whose answers are numbers,
#: so SmolLM2-135M gets clearly non-zero accuracy (its single-sample accuracy on the defaults
#: of these datasets is about zero)
TASKS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
                         "operators": ["+", "-"], "allow_parentheses": False,
                         "allow_negation": False},
    "chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    "gcd": {"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 20},
}
METHODS = ("majority_vote", "self_refine", "rsa")


class StudyError(Exception):
    """A bad argument: printed as one line, exit code 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The study's command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="vllm:<checkpoint> (in-process vLLM) or a LiteLLM model "
                   "string; default: the embedded SmolLM2-135M-Instruct on vLLM's CPU build")
    p.add_argument("--api-base", help="OpenAI-compatible server URL for a LiteLLM model")
    p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="engine / vllm.LLM option (VALUE read as JSON when it parses), repeatable")
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"comma-separated reasoning-gym datasets (default {','.join(TASKS)}); "
                   "names outside that list use the dataset's default config")
    p.add_argument("--limit", type=int, default=10, help="problems per task (10)")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the generated problems (0)")
    p.add_argument("--answer-format", choices=("number", "tags"), default="number",
                   help="number: ask for a number, lenient extraction (default); tags: "
                   "reasoning-gym's <answer> tags, strict")
    p.add_argument("-N", "--population", type=int, default=4, help="population (4)")
    p.add_argument("-K", "--aggregation-size", type=int, default=2, help="K (2)")
    p.add_argument("-T", "--steps", type=int, default=3, help="steps incl. the first (3)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per generation (128)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0.7)")
    p.add_argument("--seed", type=int, default=0, help="seed of subsets and samples (0)")
    p.add_argument("--out", type=Path, required=True, help="output directory (resumed if it "
                   "holds traces of the same settings)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimate, exit")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal)")
    return p.parse_args(argv)


def base_config(args: argparse.Namespace) -> RSAConfig:
    """The RSA configuration every method derives from."""
    try:
        return RSAConfig(population=args.population, aggregation_size=args.aggregation_size,
                         steps=args.steps, max_tokens=args.max_tokens,
                         temperature=args.temperature, seed=args.seed, selection="majority")
    except ConfigError as exc:
        flags = {"population": "-N", "aggregation_size": "-K", "steps": "-T",
                 "max_tokens": "--max-tokens", "temperature": "--temperature", "seed": "--seed"}
        name = str(exc).split(" ", 1)[0]
        raise StudyError(f"{flags.get(name, name)}: {exc}") from None


def method_configs(config: RSAConfig) -> dict[str, RSAConfig]:
    """The compared methods, exactly as ``rsa eval --compare`` builds them."""
    from rsa_plugins.runs import compare_configs

    return compare_configs(config)


def task_list(spec: str) -> dict[str, dict[str, Any]]:
    """Datasets named in `spec` with their configs."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise StudyError("--tasks: name at least one reasoning-gym dataset")
    return {n: dict(TASKS.get(n, {})) for n in names}


def load_problems(tasks: dict[str, dict[str, Any]], limit: int, seed: int,
                  answer_format: str) -> list[Any]:
    """Every task's problems, in task order."""
    from rsa_plugins.reasoning_gym import reasoning_gym_problems

    if limit < 1:
        raise StudyError(f"--limit must be >= 1, got {limit}")
    problems = []
    for name, cfg in tasks.items():
        try:
            problems += reasoning_gym_problems(name, limit, seed, answer_format, **cfg)
        except (ValueError, TypeError) as exc:
            raise StudyError(f"--tasks: {name}: {exc}") from None
    return problems


def estimate(configs: dict[str, RSAConfig], problems: int) -> dict[str, Any]:
    """Generations per method and upper bounds of generated tokens (every generation at max)."""
    gens = {m: c.generations_per_problem * problems for m, c in configs.items()}
    total = sum(gens.values())
    max_tokens = next(iter(configs.values())).max_tokens or 0
    return {"generations": gens, "total_generations": total,
            "max_generated_tokens": total * max_tokens}


def engine_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict (values parsed as JSON when they parse)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise StudyError(f"--engine-arg must look like KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def make_engine(args: argparse.Namespace) -> tuple[Any, str]:
    """One engine for the whole study (the embedded model unless --model), and its label."""
    from rsa_plugins.api import make_engine as build
    from rsa_plugins.runs import CLIError, Model

    ns = argparse.Namespace(model=args.model, api_base=args.api_base, concurrency=64,
                            timeout=600.0)
    try:
        model = Model.resolve(ns)
    except CLIError as exc:
        raise StudyError(str(exc)) from None
    # the embedded model comes with the CLI's CPU settings (rsa_plugins.embedded.ENGINE_OPTIONS)
    options = {**model.options, **engine_options(args.engine_arg)}
    try:
        return build(model.model, model.api_base, **options), model.label
    except (ValueError, TypeError) as exc:
        raise StudyError(f"--model {model.model} (with --engine-arg {options}): {exc}") from None


async def run_methods(engine: Any, problems: list[Any], configs: dict[str, RSAConfig],
                      out: Path, progress: bool | None, info: dict[str, Any],
                      planned_generations: int) -> dict[str, dict[str, Any]]:
    """Each method over every problem on `engine`; per-method time and tokens."""
    from rsa_plugins.loop import RSALoop
    from rsa_plugins.observers import StepLog

    stats: dict[str, dict[str, Any]] = {}
    done_gens = done_tokens = 0
    started_all = time.monotonic()
    for i, (name, config) in enumerate(configs.items(), 1):
        print(f"[{i}/{len(configs)}] {name}: N={config.population} K={config.aggregation_size} "
              f"T={config.steps}, {config.generations_per_problem * len(problems)} generations",
              file=sys.stderr, flush=True)
        log = StepLog(name, len(problems), config.steps)
        started, calls = time.monotonic(), getattr(engine, "calls", None)
        results = await RSALoop(engine, config, trace=out / f"trace-{name}.jsonl", progress=progress,
                            observers=[log], run_info={**info, "method": name}).run(problems)
        seconds = time.monotonic() - started
        completion = sum(r.usage.completion_tokens for r in results)
        prompt = sum(r.usage.prompt_tokens for r in results)
        gens = config.generations_per_problem * len(problems)
        resumed = calls is not None and getattr(engine, "calls", None) == calls
        stats[name] = {"seconds": None if resumed else round(seconds, 1), "generations": gens,
                       "completion_tokens": completion, "prompt_tokens": prompt}
        done_gens += gens
        done_tokens += completion
        mean = done_tokens / max(1, done_gens)
        speed = "all read from the trace" if resumed else \
            f"{completion / max(seconds, 1e-6):,.0f}/s"
        print(f"[{i}/{len(configs)}] {name} done in {seconds:.0f} s: {completion:,} generated "
              f"tokens ({speed}), mean {completion / gens:.0f} "
              f"per generation; projected study total {mean * planned_generations:,.0f} "
              f"generated tokens, {time.monotonic() - started_all:.0f} s so far",
              file=sys.stderr, flush=True)
    return stats


def per_problem(trace: Path) -> dict[str, dict[str, Any]]:
    """From a trace: per problem, final correctness, per step the members' correctness and
    whether the step's majority answer was correct (``majority``).

    A member is correct when reasoning-gym scored it 1.0 (partial credit counts as wrong); a
    failed generation counts as wrong; a failed problem (no final answer) as wrong.
    """
    from rsa_plugins.trace import load

    scores: dict[tuple[str, int, int], float] = {}
    finals: dict[str, dict[str, Any]] = {}
    majority: dict[str, dict[int, int]] = {}
    for ev in load(trace):
        event = ev.get("event")
        if event == "generation":
            key = (ev["problem"], int(ev["step"]), int(ev["slot"]))
            ok = ev.get("error") is None and ev.get("score") is not None
            if ok or key not in scores:  # a retried generation replaces a failed one
                scores[key] = float(ev["score"]) if ok else 0.0
        elif event == "step":
            value = ev["metrics"].get("majority_accuracy", 0.0)
            majority.setdefault(ev["problem"], {})[int(ev["step"])] = int(value >= 1.0)
        elif event == "result":
            finals[ev["problem"]] = ev
    steps: dict[str, dict[int, dict[int, int]]] = {}
    for (pid, step, slot), score in scores.items():
        steps.setdefault(pid, {}).setdefault(step, {})[slot] = int(score >= 1.0)
    out = {}
    for pid, by_step in steps.items():
        final = finals.get(pid, {})
        out[pid] = {
            "final": int(bool(final.get("correct"))), "finished": pid in finals,
            "answer": final.get("answer"),
            "steps": [[by_step[t][s] for s in sorted(by_step[t])] for t in sorted(by_step)],
            "majority": [majority.get(pid, {}).get(t, 0) for t in sorted(by_step)]}
    return out


def collect(out: Path, problems: list[Any], methods: list[str]) -> list[dict[str, Any]]:
    """Per-problem records of every method, in problem order."""
    traces = {m: per_problem(out / f"trace-{m}.jsonl") for m in methods}
    rows = []
    for p in problems:
        rows.append({"id": p.id, "task": p.metadata["dataset"], "target": p.target,
                     "methods": {m: traces[m].get(p.id) for m in methods}})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the study; returns the exit code."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = parse_args(argv)
    try:
        config = base_config(args)
        configs = method_configs(config)
        tasks = task_list(args.tasks)
        problems = load_problems(tasks, args.limit, args.task_seed, args.answer_format)
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    plan = estimate(configs, len(problems))
    print(f"study: {len(tasks)} tasks x {args.limit} problems = {len(problems)} problems; "
          f"N={config.population} K={config.aggregation_size} T={config.steps} "
          f"max_tokens={config.max_tokens} temperature={config.temperature}")
    for m, g in plan["generations"].items():
        print(f"  {m}: {g:,} generations")
    print(f"  total: {plan['total_generations']:,} generations, at most "
          f"{plan['max_generated_tokens']:,} generated tokens", flush=True)
    if args.dry_run:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        engine, label = make_engine(args)
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    info = {"command": "accuracy-study", "tasks": tasks, "limit": args.limit,
            "task_seed": args.task_seed, "answer_format": args.answer_format, "model": label}
    started = time.monotonic()

    async def go() -> dict[str, dict[str, Any]]:
        try:
            return await run_methods(engine, problems, configs, args.out, args.progress, info,
                                     plan["total_generations"])
        finally:
            await engine.aclose()

    stats = asyncio.run(go())
    payload = {
        "command": ["python", "integrations/accuracy/study.py", *(argv or sys.argv[1:])],
        "model": label, "tasks": tasks, "limit": args.limit, "task_seed": args.task_seed,
        "answer_format": args.answer_format, "elapsed_s": round(time.monotonic() - started, 1),
        "configs": {m: c.to_dict() for m, c in configs.items()}, "estimate": plan,
        "methods": stats, "problems": collect(args.out, problems, list(configs))}
    (args.out / "study.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"study: written {args.out / 'study.json'} ({payload['elapsed_s']:.0f} s); next: "
          f"python integrations/accuracy/analyze.py {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
