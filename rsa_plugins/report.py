"""Turn RSA traces into per-step tables and a PNG plot.

A trace's ``step`` events are its checkpoints, so a trace cut short by an interrupted run still
gives a table (and plot) of the steps that finished.  Several traces (one per method, as
``rsa eval --compare`` writes them) give one line per method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import summarize
from .trace import load

#: (key, label) of the accuracy metrics, in plotting order
ACCURACY = (("mean_accuracy", "mean accuracy (pass@1)"), ("majority_accuracy", "majority accuracy"),
            ("pass_at_n", "pass@N"))
DIVERSITY = ("distinct_answers", "distinct answers")


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
    for row in table:  # N of that step (same for every problem)
        t = row["step"]
        row["requested_per_problem"] = max(
            (s[t - 1].get("requested", 0) for s in per_problem if len(s) >= t), default=0)
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
    """A fixed-width per-step table (averages over the problems that reached each step)."""
    cols = [("step", "step"), ("problems", "problems"), ("mean_accuracy", "mean_acc"),
            ("majority_accuracy", "maj_acc"), ("pass_at_n", "pass@N"),
            ("distinct_answers", "distinct"), ("majority_share", "maj_share"),
            ("no_answer", "no_answer"), ("truncated", "truncated"), ("failed", "failed"),
            ("prompt_tokens", "prompt_tok"), ("completion_tokens", "compl_tok")]
    rows = [[_fmt(r.get(k)) for k, _ in cols] for r in summary.table]
    return _grid([h for _, h in cols], rows)


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


def plot(summaries: Sequence[TraceSummary], out: str | Path, title: str | None = None) -> Path:
    """Write the PNG of `figure` to `out`."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = figure(summaries, title)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def figure(summaries: Sequence[TraceSummary], title: str | None = None) -> Any:
    """Accuracy metrics and answer diversity per step, as a matplotlib figure.

    One trace: two panels, accuracy (one curve per metric) and distinct answers, against the
    step.  Several traces (methods): one panel per metric, one line per method, against the
    generations spent per problem, so methods of equal compute line up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(summaries) == 1:
        s = summaries[0]
        steps = [r["step"] for r in s.table]
        fig, (ax_acc, ax_div) = plt.subplots(1, 2, figsize=(11, 4.2))
        for i, (key, label) in enumerate(ACCURACY):
            rows = [r for r in s.table if key in r]
            if rows:  # distinct markers and dashes: equal curves stay visible
                ax_acc.plot([r["step"] for r in rows], [r[key] for r in rows], **_style(i),
                            label=label)
        ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(-0.03, 1.03), title="accuracy")
        ax_div.plot(steps, [r.get(DIVERSITY[0], 0) for r in s.table], marker="o",
                    color="tab:purple", label=DIVERSITY[1])
        ax_div.set(xlabel="step", ylabel="answers", title="answer diversity (mean per problem)")
        ax_div.set_ylim(bottom=0)
        for ax in (ax_acc, ax_div):
            ax.grid(alpha=0.3)
            if ax.get_lines():
                ax.legend()
            if steps:
                ax.set_xticks(steps)
        fig.suptitle(title or _title(s))
    else:
        fig, axes = plt.subplots(2, 2, figsize=(11, 8))
        for ax, (key, label) in zip(axes.flat, [*ACCURACY, DIVERSITY]):
            for i, s in enumerate(summaries):
                xs, ys, total = [], [], 0
                for r in s.table:
                    total += r["requested_per_problem"]
                    if key in r:
                        xs.append(total)
                        ys.append(r[key])
                if xs:
                    ax.plot(xs, ys, **_style(i), label=s.method)
            ax.set(xlabel="generations per problem", ylabel=label, title=label)
            if key != DIVERSITY[0]:
                ax.set_ylim(-0.03, 1.03)
            else:
                ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            if ax.get_lines():
                ax.legend(fontsize=8)
        fig.suptitle(title or "methods compared on the same problems")
    fig.tight_layout()
    return fig


def _style(i: int) -> dict[str, Any]:
    return {"marker": "osD^v*"[i % 6], "linestyle": ("-", "--", ":", "-.")[i % 4],
            "markersize": 9 - 2 * (i % 3)}


def _title(s: TraceSummary) -> str:
    cfg = s.config
    task = s.run.get("task")
    return (f"{s.method}{f' on {task}' if task else ''}: N={cfg.get('population')} "
            f"K={cfg.get('aggregation_size')} T={cfg.get('steps')}, {s.problems} problems")


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
                     "note": "" if s.finished else "incomplete"})
    return rows


def compare_table(rows: Sequence[dict[str, Any]]) -> str:
    """Fixed-width table of `compare_rows`."""
    cols = [("method", "method"), ("N", "N"), ("K", "K"), ("T", "T"),
            ("generations_per_problem", "gen/problem"), ("generations", "generations"),
            ("tokens", "tokens"), ("accuracy", "accuracy"),
            ("final_mean_accuracy", "final_mean_acc"), ("final_pass_at_n", "final_pass@N"),
            ("note", "note")]
    body = [[_fmt(r.get(k)) for k, _ in cols] for r in rows]
    return _grid([h for _, h in cols], body)
