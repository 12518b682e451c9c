"""Turn a `study.py` output directory into markdown tables (with 95% CIs) and per-step plots.

    python integrations/accuracy/analyze.py runs/study --plots docs/results --name gpu

Accuracy of a method whose outcome per problem is 0/1 (majority vote, the final majority
answers of self-refinement and RSA) gets a Wilson interval; the single-sample accuracy (per
problem the share of correct samples) a bootstrap interval over problems.  Differences between
methods are paired (same problems): a paired bootstrap over problems, seeded, so the same input
gives the same table.  Plots: per task, mean population accuracy, majority accuracy and pass@N
per step for RSA and self-refinement, with majority vote and single sample as reference lines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Z95 = 1.959963984540054
#: (key, label) of the methods in table order; "single" is derived from majority vote's samples
METHODS = (("single", "single sample"), ("majority_vote", "majority vote @ N*T"),
           ("self_refine", "self-refine (K=1)"), ("rsa", "RSA"))
#: paired differences reported: (minuend, subtrahend)
PAIRS = (("rsa", "majority_vote"), ("rsa", "single"), ("rsa", "self_refine"))
ALL = "all tasks"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n ({n}), got {k}")
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_ci(values: Sequence[float], resamples: int = 10_000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling problems)."""
    x = np.asarray(values, dtype=float)
    if x.size < 1:
        raise ValueError("values must not be empty")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over paired problems and its percentile bootstrap 95% interval."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal lengths, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    lo, hi = bootstrap_ci(d, resamples, seed)
    return float(d.mean()), lo, hi


# ---------------------------------------------------------------------------- per problem

def load(run_dir: Path) -> dict[str, Any]:
    """The study's `study.json`."""
    path = run_dir / "study.json"
    if not path.is_file():
        raise FileNotFoundError(f"no study.json in {run_dir} (run study.py with --out {run_dir})")
    return json.loads(path.read_text())


def outcomes(problems: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per method, one number per problem: 0/1 final correctness ("single": share correct)."""
    out: dict[str, list[float]] = {key: [] for key, _ in METHODS}
    for p in problems:
        m = p["methods"]
        first = m["majority_vote"]["steps"][0]
        out["single"].append(sum(first) / len(first))
        for key in ("majority_vote", "self_refine", "rsa"):
            out[key].append(float(m[key]["final"]) if m.get(key) else 0.0)
    return out


def step_curves(problems: list[dict[str, Any]], method: str) -> dict[str, list[float]]:
    """Per step, over problems: mean population accuracy, majority accuracy and pass@N."""
    runs = [p["methods"][method] for p in problems if p["methods"].get(method)]
    depth = min(len(r["steps"]) for r in runs) if runs else 0
    curves: dict[str, list[float]] = {"mean_accuracy": [], "majority_accuracy": [],
                                      "pass_at_n": []}
    for t in range(depth):
        pops = [r["steps"][t] for r in runs]
        curves["mean_accuracy"].append(float(np.mean([sum(s) / len(s) for s in pops])))
        curves["pass_at_n"].append(float(np.mean([float(any(s)) for s in pops])))
        curves["majority_accuracy"].append(float(np.mean([r["majority"][t] for r in runs])))
    return curves


def by_task(study: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Problems grouped by task (in the study's task order), plus every problem under ALL."""
    groups: dict[str, list[dict[str, Any]]] = {t: [] for t in study["tasks"]}
    for p in study["problems"]:
        groups.setdefault(p["task"], []).append(p)
    if len(groups) > 1:
        groups[ALL] = list(study["problems"])
    return groups


# ---------------------------------------------------------------------------- tables

def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def accuracy_rows(problems: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One row per method: accuracy, its 95% CI and the final mean population accuracy."""
    res = outcomes(problems)
    rows = []
    for key, label in METHODS:
        vals = res[key]
        n = len(vals)
        acc = sum(vals) / n
        if key == "single":
            lo, hi = bootstrap_ci(vals, seed=seed)
            ci = "bootstrap"
        else:
            lo, hi = wilson(round(sum(vals)), n)
            ci = "Wilson"
        row = {"method": label, "key": key, "n": n, "accuracy": acc, "lo": lo, "hi": hi,
               "ci": ci, "final_mean": None}
        if key in ("self_refine", "rsa"):
            curves = step_curves(problems, key)
            row["final_mean"] = curves["mean_accuracy"][-1] if curves["mean_accuracy"] else None
        rows.append(row)
    return rows


def paired_rows(problems: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """RSA minus each baseline, paired over problems, with bootstrap 95% CIs."""
    res = outcomes(problems)
    rows = []
    for a, b in PAIRS:
        mean, lo, hi = paired_bootstrap(res[a], res[b], seed=seed)
        rows.append({"pair": f"{a} - {b}", "a": a, "b": b, "diff": mean, "lo": lo, "hi": hi})
    return rows


def markdown(study: dict[str, Any], seed: int = 0) -> str:
    """The accuracy table and the paired-difference table of a study, as markdown."""
    groups = by_task(study)
    labels = dict(METHODS)
    lines = ["| task | method | accuracy % [95% CI] | final population mean % | problems |",
             "| --- | --- | --- | --- | --- |"]
    for task, problems in groups.items():
        for r in accuracy_rows(problems, seed):
            fm = "-" if r["final_mean"] is None else pct(r["final_mean"])
            lines.append(f"| {task} | {r['method']} | {pct(r['accuracy'])} "
                         f"[{pct(r['lo'])}, {pct(r['hi'])}] | {fm} | {r['n']} |")
    head = " | ".join(f"{labels[a]} − {labels[b]}" for a, b in PAIRS)
    lines += ["", f"| task | {head} |", "| --- |" + " --- |" * len(PAIRS)]
    for task, problems in groups.items():
        cells = [f"{100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]"
                 + (" *" if r["lo"] > 0 or r["hi"] < 0 else "")
                 for r in paired_rows(problems, seed)]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost_markdown(study: dict[str, Any]) -> str:
    """Generations and tokens spent per method."""
    problems = len(study["problems"])
    lines = ["| method | generations / problem | generated tokens | prompt tokens | mean "
             "generated tokens / generation | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for key, stats in study["methods"].items():
        gens = stats["generations"]
        lines.append(f"| {key} | {gens // max(1, problems)} | {stats['completion_tokens']:,} | "
                     f"{stats['prompt_tokens']:,} | {stats['completion_tokens'] / gens:.0f} | "
                     f"{'-' if stats['seconds'] is None else round(stats['seconds'])} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- plots

def plot_task(task: str, problems: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Per-step curves of RSA and self-refinement on one task, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = outcomes(problems)
    fig, ax = plt.subplots(figsize=(8.4, 3.6))
    colors = {"mean_accuracy": "tab:blue", "majority_accuracy": "tab:orange",
              "pass_at_n": "tab:green"}
    names = {"mean_accuracy": "mean population acc.", "majority_accuracy": "majority acc.",
             "pass_at_n": "pass@N"}
    steps = []
    for method, style, marker in (("rsa", "-", "o"), ("self_refine", "--", "s")):
        curves = step_curves(problems, method)
        for key, ys in curves.items():
            steps = list(range(1, len(ys) + 1))
            ax.plot(steps, ys, linestyle=style, marker=marker, markersize=4, color=colors[key],
                    label=f"{'RSA' if method == 'rsa' else 'self-refine'}: {names[key]}")
    ax.axhline(float(np.mean(res["majority_vote"])), color="black", linestyle=":",
               label="majority vote @ N*T")
    ax.axhline(float(np.mean(res["single"])), color="gray", linestyle="-.",
               label="single sample")
    ax.set(xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02),
           title=f"{task}: {title} ({len(problems)} problems)")
    if steps:
        ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Print the markdown tables; write one PNG per task."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="output directory of study.py")
    p.add_argument("--plots", type=Path, default=Path("docs/results"),
                   help="directory for the PNGs (docs/results)")
    p.add_argument("--name", default="study", help="file-name prefix of the PNGs (study)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    args = p.parse_args(argv)
    try:
        study = load(args.run)
    except FileNotFoundError as exc:
        print(f"analyze: error: {exc}", file=sys.stderr)
        return 2
    cfg = study["configs"]["rsa"]
    title = f"N={cfg['population']} K={cfg['aggregation_size']} T={cfg['steps']}"
    print(f"model: {study['model']}; {title}, max_tokens={cfg['max_tokens']}, "
          f"temperature={cfg['temperature']}; {len(study['problems'])} problems\n")
    print(markdown(study, args.seed))
    print(cost_markdown(study))
    if not args.no_plots:
        for task, problems in by_task(study).items():
            if task == ALL:
                continue
            png = plot_task(task, problems, args.plots / f"{args.name}-{task}.png", title)
            print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
