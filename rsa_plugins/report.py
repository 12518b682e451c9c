"""Turn RSA traces into per-step tables (the plot is `rsa_plugins.plot`).

A trace's ``step`` events are its checkpoints, so a trace cut short by an interrupted run still
gives a table (and plot) of the steps that finished.  Several traces (one per method, as
``rsa eval --compare`` writes them) give one line per method.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import summarize
from .trace import load

@dataclass
class TraceSummary:
    """What one trace says: its run header, per-step averages and final results."""

    path: Path
    method: str
    run: dict[str, Any]
    table: list[dict[str, Any]]
    results: list[dict[str, Any]] = field(default_factory=list)
    problems: int = 0

    @property
    def config(self) -> dict[str, Any]:
        return self.run.get("config") or {}

    @property
    def steps_planned(self) -> int | None:
        return self.config.get("steps")

    @property
    def finished(self) -> bool:
        """Every problem seen has a final result."""
        return bool(self.results) and len(self.results) >= self.problems

    def accuracy(self) -> float | None:
        """Share of problems whose chosen answer was scored correct (None if none scored)."""
        scored = [r["correct"] for r in self.results if r.get("correct") is not None]
        return sum(bool(c) for c in scored) / len(scored) if scored else None

    def generations_per_problem(self) -> int:
        """Generations one problem cost up to the last finished step (N per step)."""
        return sum(int(row.get("requested_per_problem", 0)) for row in self.table)


def summarize_trace(path: str | Path, method: str | None = None) -> TraceSummary:
    """Per-step averages over problems (`metrics.summarize`) and the final results of a trace."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trace at {path}")
    events = load(path)
    runs = [e for e in events if e.get("event") == "run"]
    if not runs:
        raise ValueError(f"{path} is not an RSA trace (no 'run' event)")
    steps: dict[str, dict[int, dict[str, Any]]] = {}
    results: dict[str, dict[str, Any]] = {}
    seen: dict[str, None] = {}
    for ev in events:
        kind = ev.get("event")
        if kind in ("generation", "step", "result"):
            seen.setdefault(ev["problem"], None)
        if kind == "step":
            steps.setdefault(ev["problem"], {})[int(ev["step"])] = ev["metrics"]
        elif kind == "result":
            results[ev["problem"]] = ev
    per_problem = [[done[t] for t in sorted(done)] for done in steps.values()]
    table = summarize(per_problem)
    ended = Counter(r["stopped"]["step"] for r in results.values() if r.get("stopped"))
    for row in table:  # N of that step (same for every problem)
        t = row["step"]
        row["requested_per_problem"] = max(
            (s[t - 1].get("requested", 0) for s in per_problem if len(s) >= t), default=0)
        row["stopped"] = ended.get(t, 0)  # by any reason, the budget's too
    label = method or runs[0].get("method") or path.stem.removeprefix("trace-")
    return TraceSummary(path, label, runs[0], table, list(results.values()), len(seen))


def find_traces(paths: Sequence[str | Path]) -> list[Path]:
    """Trace files named by `paths`; a directory stands for the ``*.jsonl`` files inside it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(p.glob("*.jsonl"))
            if not inside:
                raise FileNotFoundError(f"no trace (*.jsonl) in {p}")
            found += inside
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no trace at {p}")
    return found


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def step_table(summary: TraceSummary) -> str:
    """A fixed-width per-step table (averages over the problems that reached each step).

    ``answered``: generations with an answer of the task's format, of those generated;
    ``truncated``: generations cut by the token budget; ``failed``: calls that failed for good.
    """
    cols = [("step", "step"), ("problems", "problems"), ("mean_accuracy", "mean_acc"),
            ("majority_accuracy", "maj_acc"), ("pass_at_n", "pass@N"), ("answered", "answered"),
            ("truncated", "truncated"), ("failed", "failed"), ("distinct_answers", "distinct"),
            ("majority_share", "maj_share"), ("prompt_tokens", "prompt_tok"),
            ("completion_tokens", "compl_tok")]
    if any(r.get("stopped") for r in summary.table):
        cols.insert(2, ("stopped", "stopped"))
    rows = []
    for r in summary.table:
        made = r.get("population", 0) + r.get("failed", 0)
        shown = {**r, "answered": f"{answered(r)}/{r.get('population', 0)}",
                 "truncated": f"{r.get('truncated', 0)}/{r.get('population', 0)}",
                 "failed": f"{r.get('failed', 0)}/{made}"}
        rows.append([_fmt(shown.get(k)) for k, _ in cols])
    return _grid([h for _, h in cols], rows)


def answered(row: dict[str, Any]) -> int:
    """Generations of a step (summed over problems) that gave an answer."""
    return row.get("population", 0) - row.get("no_answer", 0)


def share(row: dict[str, Any], key: str) -> float:
    """answered or truncated generations as a share of the step's generations (0 if none)."""
    made = row.get("population", 0)
    value = answered(row) if key == "answered" else row.get(key, 0)
    return value / made if made else 0.0


def format_note(summary: TraceSummary) -> str | None:
    """A plain sentence when most generations gave no answer in the task's format."""
    made = sum(r.get("population", 0) for r in summary.table)
    missing = sum(r.get("no_answer", 0) for r in summary.table)
    if not made or 2 * missing <= made:
        return None
    return (f"the model did not follow the answer format: {missing}/{made} generations gave no "
            "answer (a weak model or a format it cannot write; accuracies count them wrong)")


def stop_note(summary: TraceSummary) -> str | None:
    """Where and why problems stopped before the last step, and the generations that saved
    (None when every problem ran every step)."""
    stops = Counter((r["stopped"]["reason"], r["stopped"]["step"]) for r in summary.results
                    if r.get("stopped"))
    if not stops:
        return None
    n, t = summary.config.get("population") or 0, summary.config.get("steps") or 0
    saved = sum(k * n * (t - step) for (_, step), k in stops.items())
    order = sorted(stops, key=lambda rs: (rs[1], rs[0]))  # by step, then reason
    where = ", ".join(f"{reason} after step {step} ({stops[reason, step]})"
                      for reason, step in order)
    return (f"{sum(stops.values())} of {summary.problems} problems stopped early: {where}; "
            f"{saved} generations not made")


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def describe(summary: TraceSummary) -> str:
    """Header line, table and the final-answer line of one trace."""
    cfg = summary.config
    done = summary.table[-1]["step"] if summary.table else 0
    head = (f"{summary.method}: N={cfg.get('population')} K={cfg.get('aggregation_size')} "
            f"T={cfg.get('steps')}  model={summary.run.get('model') or summary.run.get('engine')}"
            f"  problems={summary.problems}")
    lines = [head, step_table(summary) if summary.table else "(no step finished yet)"]
    for note in (format_note(summary), stop_note(summary)):
        if note:
            lines.append(f"note: {note}")
    acc = summary.accuracy()
    if summary.finished:
        if acc is not None:
            n = sum(1 for r in summary.results if r.get("correct") is not None)
            lines.append(f"final answers ({cfg.get('selection', 'majority')}): "
                         f"{round(acc * n)}/{n} correct = {acc:.1%}")
    else:
        lines.append(f"incomplete run: {len(summary.results)}/{summary.problems} problems "
                     f"finished; table covers the {done} step(s) with checkpoints "
                     f"(of {summary.steps_planned} planned)")
    return "\n".join(lines)


def totals(summary: TraceSummary) -> dict[str, int]:
    """Generations and tokens spent over all problems, up to the last finished step."""
    gens = sum(r["requested_per_problem"] * r["problems"] for r in summary.table)
    prompt = sum(r.get("prompt_tokens", 0) for r in summary.table)
    completion = sum(r.get("completion_tokens", 0) for r in summary.table)
    return {"generations": gens, "prompt_tokens": prompt, "completion_tokens": completion,
            "tokens": prompt + completion}


def compare_rows(summaries: Sequence[TraceSummary]) -> list[dict[str, Any]]:
    """One row per method: accuracy against generations and tokens.

    A "single sample" row comes first: the step-1 mean accuracy (the expected accuracy of one
    sample) of the run with the largest first population, at the cost of one generation.
    """
    rows: list[dict[str, Any]] = []
    firsts = [s for s in summaries if s.table and "mean_accuracy" in s.table[0]]
    if firsts:
        base = max(firsts, key=lambda s: s.table[0]["requested_per_problem"])
        first = base.table[0]
        n = max(1, first["requested_per_problem"] * first["problems"])
        rows.append({"method": "single sample", "N": 1, "K": "-", "T": 1,
                     "generations_per_problem": 1, "generations": first["problems"],
                     "tokens": round((first["prompt_tokens"] + first["completion_tokens"])
                                     * first["problems"] / n),
                     "accuracy": first["mean_accuracy"],
                     "final_answered": share(first, "answered"),
                     "note": f"step-1 mean accuracy of {base.method}"})
    for s in summaries:
        cfg, tot = s.config, totals(s)
        last = s.table[-1] if s.table else {}
        rows.append({"method": s.method, "N": cfg.get("population"),
                     "K": cfg.get("aggregation_size") if cfg.get("steps", 1) > 1 else "-",
                     "T": cfg.get("steps"), "generations_per_problem": s.generations_per_problem(),
                     "generations": tot["generations"], "tokens": tot["tokens"],
                     "accuracy": s.accuracy(), "final_mean_accuracy": last.get("mean_accuracy"),
                     "final_pass_at_n": last.get("pass_at_n"),
                     "final_answered": share(last, "answered") if last else None,
                     "note": "" if s.finished else "incomplete"})
    return rows


def compare_table(rows: Sequence[dict[str, Any]]) -> str:
    """Fixed-width table of `compare_rows`."""
    cols = [("method", "method"), ("N", "N"), ("K", "K"), ("T", "T"),
            ("generations_per_problem", "gen/problem"), ("generations", "generations"),
            ("tokens", "tokens"), ("accuracy", "accuracy"),
            ("final_mean_accuracy", "final_mean_acc"), ("final_pass_at_n", "final_pass@N"),
            ("final_answered", "final_answered"), ("note", "note")]
    body = [[_fmt(r.get(k)) for k, _ in cols] for r in rows]
    return _grid([h for _, h in cols], body)


def reading(summaries: Sequence[TraceSummary]) -> str | None:
    """One plain sentence on what the accuracies say (None when nothing was scored)."""
    done = [s for s in summaries if s.table and "mean_accuracy" in s.table[0]]
    if not done:
        return None
    first = max(done, key=lambda s: s.table[0]["requested_per_problem"]).table[0]
    single = f"one sample is right {first['mean_accuracy']:.0%} of the time"
    if len(done) > 1:
        ranked = sorted(done, key=lambda s: -(s.accuracy() or 0.0))
        gens = max(s.generations_per_problem() for s in done)
        methods = ", ".join(f"{s.method} {s.accuracy() or 0.0:.0%}" for s in ranked)
        return (f"reading: at {gens} generations per problem the final answers are right: "
                f"{methods}; {single} (step-1 mean accuracy).")
    s = done[0]
    trend = " -> ".join(f"{r['mean_accuracy']:.2f}" for r in s.table if "mean_accuracy" in r)
    scored = [r for r in s.results if r.get("correct") is not None]
    final = f"{sum(bool(r['correct']) for r in scored)}/{len(scored)}" if scored else "-"
    return (f"reading: {single} (step-1 mean accuracy); {s.method}'s final answers are right "
            f"for {final} problems; the population's mean accuracy per step: {trend}.")
