"""The PNG of ``rsa report`` and ``rsa eval``: accuracy, answer format and diversity per step.

One trace: three panels against the step: the accuracy metrics, the shares of generations that
gave an answer and that were cut by the token budget, and the distinct answers.  Several traces
(methods of ``--compare``): one panel per metric, one line per method, against the generations
spent per problem, so methods of equal compute line up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import TraceSummary, format_note, share

#: (key, label) of the accuracy metrics, in plotting order
ACCURACY = (("mean_accuracy", "mean accuracy (pass@1)"), ("majority_accuracy", "majority accuracy"),
            ("pass_at_n", "pass@N"))
#: (key, label) of the answer-format shares
FORMAT = (("answered", "answered"), ("truncated", "truncated"))
DIVERSITY = ("distinct_answers", "distinct answers")


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
    """The matplotlib figure of one trace or of several compared ones."""
    import matplotlib

    matplotlib.use("Agg")
    if len(summaries) == 1:
        fig = _one(summaries[0])
        fig.suptitle(title or _title(summaries[0]))
        note = format_note(summaries[0])
        if note:
            fig.text(0.5, 0.01, note, ha="center", va="bottom", color="tab:red", fontsize=9)
        fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    else:
        fig = _several(summaries)
        fig.suptitle(title or "methods compared on the same problems")
        fig.tight_layout()
    return fig


def _one(s: TraceSummary) -> Any:
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in s.table]
    fig, (ax_acc, ax_fmt, ax_div) = plt.subplots(1, 3, figsize=(15, 4.4))
    for i, (key, label) in enumerate(ACCURACY):
        rows = [r for r in s.table if key in r]
        if rows:  # distinct markers and dashes: equal curves stay visible
            ax_acc.plot([r["step"] for r in rows], [r[key] for r in rows], **_style(i),
                        label=label)
    ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(-0.03, 1.03), title="accuracy")
    for i, (key, label) in enumerate(FORMAT):
        ax_fmt.plot(steps, [share(r, key) for r in s.table], **_style(i), label=label)
    ax_fmt.set(xlabel="step", ylabel="share of generations", ylim=(-0.03, 1.03),
               title="answer format")
    ax_div.plot(steps, [r.get(DIVERSITY[0], 0) for r in s.table], marker="o",
                color="tab:purple", label=DIVERSITY[1])
    ax_div.set(xlabel="step", ylabel="answers", title="answer diversity (mean per problem)")
    ax_div.set_ylim(bottom=0)
    for ax in (ax_acc, ax_fmt, ax_div):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
        if steps:
            ax.set_xticks(steps)
    return fig


def _several(summaries: Sequence[TraceSummary]) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels = [*ACCURACY, DIVERSITY, *FORMAT]
    for ax, (key, label) in zip(axes.flat, panels):
        for i, s in enumerate(summaries):
            xs, ys, total = [], [], 0
            for r in s.table:
                total += r["requested_per_problem"]
                value = share(r, key) if key in dict(FORMAT) else r.get(key)
                if value is not None:
                    xs.append(total)
                    ys.append(value)
            if xs:
                ax.plot(xs, ys, **_style(i), label=s.method)
        name = f"{label} (share)" if key in dict(FORMAT) else label
        ax.set(xlabel="generations per problem", ylabel=name, title=name)
        if key == DIVERSITY[0]:
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    return fig


def _style(i: int) -> dict[str, Any]:
    return {"marker": "osD^v*"[i % 6], "linestyle": ("-", "--", ":", "-.")[i % 4],
            "markersize": 9 - 2 * (i % 3)}


def _title(s: TraceSummary) -> str:
    cfg = s.config
    task = s.run.get("task")
    return (f"{s.method}{f' on {task}' if task else ''}: N={cfg.get('population')} "
            f"K={cfg.get('aggregation_size')} T={cfg.get('steps')}, {s.problems} problems")
