"""The output directory of a run: its traces, ``summary.json`` and plot.

``rsa run`` and ``rsa eval`` write ``runs/<timestamp>/`` (or ``--out``): one trace per method
(``trace.jsonl`` alone, ``trace-<method>.jsonl`` compared), ``summary.json`` and ``report.png``.
Running again with the same ``--out`` resumes the traces and rewrites those two; ``rsa report``
writes its plot under a free name (`free_path`), never over another command's output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import RSAConfig
from .runs import CLIError, Model, Outcome, trace_path


def output_dir(out: Path | None) -> Path:
    """`out`, or a fresh ``runs/<timestamp>``; created."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out, n = Path("runs") / stamp, 1
        while out.exists():
            n += 1
            out = Path("runs") / f"{stamp}-{n}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create output directory {out}: {exc.strerror}") from None
    return out


def free_path(path: Path) -> Path:
    """`path`, or ``<stem>-2<suffix>``, ``-3``, ... when it exists: nothing is overwritten."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")


def plot(summaries: list[Any], png: Path) -> Path | None:
    """The report plot at `png`, or None when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from .plot import plot as draw

    return draw(summaries, png)


def eval_summary(args: argparse.Namespace, task: str, model: Model, problems: list[Any],
                 configs: dict[str, RSAConfig], summaries: list[Any],
                 outcome: Outcome) -> dict[str, Any]:
    """The content of ``summary.json`` of ``rsa eval``."""
    from .report import totals

    payload: dict[str, Any] = {
        "command": ["rsa", *sys.argv[1:]], "task": task, "limit": len(problems),
        "task_seed": args.task_seed, "model": model.label, "api_base": args.api_base,
        "engine_start_s": round(outcome.engine_seconds, 1), "methods": {}, "problems": []}
    for s in summaries:
        payload["methods"][s.method] = {
            "config": configs[s.method].to_dict(), "trace": str(s.path),
            "accuracy": s.accuracy(), "generations_per_problem": s.generations_per_problem(),
            "seconds": round(outcome.seconds[s.method], 1), **totals(s),
            "stopped": dict(Counter(r.stopped.reason for r in outcome.results[s.method]
                                    if r.stopped is not None)),
            "per_step": s.table}
    for i, p in enumerate(problems):
        payload["problems"].append({
            "id": p.id, "target": p.target,
            "answers": {m: rs[i].answer for m, rs in outcome.results.items()},
            "correct": {m: rs[i].correct for m, rs in outcome.results.items()},
            "stopped": {m: dataclasses.asdict(rs[i].stopped) if rs[i].stopped else None
                        for m, rs in outcome.results.items()}})
    return payload


def eval_closing(payload: dict[str, Any], elapsed: float) -> Iterator[str]:
    """The closing lines of ``rsa eval``: RSA's accuracy and cost, each method at its own time."""
    methods, problems = payload["methods"], len(payload["problems"])
    for name, m in methods.items():
        if name == "rsa" or len(methods) > 1:
            acc = "-" if m["accuracy"] is None else f"{m['accuracy']:.1%}"
            yield (f"{name}: accuracy {acc} on {problems} problems, {m['generations']} "
                   f"generations, {m['tokens']:,} tokens, {m['seconds']:.0f} s")
    yield (f"total: {elapsed:.0f} s, of which {payload['engine_start_s']:.0f} s starting the "
           "engine")


def stopped_line(stop: Any, config: Any) -> str:
    """``stopped after step 2 of 5: unanimous (12 generations not made)``."""
    left = (config.steps - stop.step) * config.population
    return (f"stopped after step {stop.step} of {config.steps}: {stop.reason} ({left} "
            "generations not made)")


def votes_line(votes: dict[str, int], population: int) -> str:
    """``votes (3 of 4): 42 x2, 41 x1``: the final population's answers, most voted first."""
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{_short(a)} x{n}" for a, n in ranked[:5])
    shown += f", ... ({len(ranked) - 5} more)" if len(ranked) > 5 else ""
    return f"votes ({sum(votes.values())} of {population}): {shown or '-'}"


def _short(text: Any, width: int = 40) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."
