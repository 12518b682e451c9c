"""Print a measured RSA result beside the paper's number for Qwen3-4B-Instruct-2507.

    python integrations/reproduce/compare.py BENCHMARK RESULT [RESULT ...]

BENCHMARK is one of aime25, hmmt25, rg_games, livecodebench_v6, supergpqa.  A RESULT is an
lm-eval ``results_*.json``, an Inspect ``.eval`` log, an ``rsa eval`` ``summary.json``, or a
directory holding any of them (searched recursively).  Several results (e.g. one ``rsa eval``
per reasoning-gym game) are pooled, weighted by their number of problems.

The paper reports Pass@1 = the mean accuracy of the final population (N=16, K=4, T=10).  The
measured counterpart is the final step's mean population accuracy; the accuracy of the answer
RSA picks (majority vote by default) and, where the result has it, the step-1 mean accuracy
(the expected accuracy of one sample: the paper's "single sample" baseline) are printed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The paper's numbers (percent) for Qwen3-4B-Instruct-2507 with N=16 K=4 T=10, as recorded in
#: the project's research notes (shared/research/rsa-paper-and-peers.md, section 2; secondary
#: sources quoting the paper).  None: not recorded there.
PAPER: dict[str, dict[str, Any]] = {
    "aime25": {"name": "AIME-25", "single": "43.91", "rsa": "73.18 ± 2.20",
               "self_refine": "53.33", "majority_vote": None},
    "hmmt25": {"name": "HMMT-25", "single": "27.17", "rsa": "47.55 ± 1.00",
               "self_refine": None, "majority_vote": None},
    "rg_games": {"name": "Reasoning Gym games", "single": "53.9", "rsa": "69.0",
                 "self_refine": None, "majority_vote": None},
    "livecodebench_v6": {"name": "LiveCodeBench v6", "single": "49.63", "rsa": "56.72",
                         "self_refine": None, "majority_vote": None},
    "supergpqa": {"name": "SuperGPQA (1000 questions)", "single": "41.85", "rsa": "47.39",
                  "self_refine": "43.5", "majority_vote": "48.2"},
}
PAPER_SETTINGS = {"population": 16, "aggregation_size": 4, "steps": 10}


@dataclass
class Measurement:
    """Accuracies (fractions) measured in one result, over `problems` problems."""

    source: str
    framework: str  # "lm-eval", "inspect" or "rsa"
    problems: int
    final_mean: float | None = None      # final population's mean accuracy (paper's Pass@1)
    chosen: float | None = None          # accuracy of the returned (majority / random) answer
    first_mean: float | None = None      # step-1 mean accuracy (expected single sample)
    settings: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- readers

def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """The result files named by `paths` (directories are searched recursively)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and _framework(p))
        elif path.is_file() and _framework(path):
            found.append(path)
        else:
            raise SystemExit(f"compare.py: no lm-eval results, Inspect log or summary.json at {path}")
    if not found:
        raise SystemExit("compare.py: no result files found")
    return found


def _framework(path: Path) -> str | None:
    if path.suffix == ".eval":
        return "inspect"
    if path.name == "summary.json":
        return "rsa"
    if path.name.startswith("results") and path.suffix == ".json":
        return "lm-eval"
    return None


def read_lm_eval(path: Path) -> list[Measurement]:
    """One measurement per task of an lm-eval results file (population-aware tasks)."""
    data = json.loads(path.read_text())
    rsa = (data.get("config") or {}).get("rsa") or {}
    settings = {k: v for k, v in (rsa.get("config") or {}).items() if k in PAPER_SETTINGS}
    out = []
    for task, metrics in data.get("results", {}).items():
        def metric(name: str) -> float | None:
            value = metrics.get(f"{name},none")
            return None if value is None else float(value)

        n = (data.get("n-samples") or {}).get(task, {}).get("effective", 0)
        out.append(Measurement(f"{path} [{task}]", "lm-eval", int(n), metric("mean_accuracy"),
                               metric("exact_match"), None, settings))
    return out


def read_inspect(path: Path) -> list[Measurement]:
    """The scorer's accuracy and RSA's per-step population accuracies of an Inspect log."""
    from inspect_ai.log import read_eval_log

    log = read_eval_log(str(path))
    samples = log.samples or []
    chosen = None
    if log.results and log.results.scores:
        acc = log.results.scores[0].metrics.get("accuracy")
        chosen = None if acc is None else float(acc.value)
    steps = [s.store.get("RSAStore:steps") or [] for s in samples]
    config = next((s.store.get("RSAStore:config") for s in samples
                   if s.store.get("RSAStore:config")), {}) or {}
    settings = {k: v for k, v in config.items() if k in PAPER_SETTINGS}
    return [Measurement(str(path), "inspect", len(samples), _mean(st[-1] for st in steps if st),
                        chosen, _mean(st[0] for st in steps if st), settings)]


def read_rsa_summary(path: Path) -> list[Measurement]:
    """``rsa eval``'s summary.json: the `rsa` method's per-step table and accuracy."""
    data = json.loads(path.read_text())
    method = (data.get("methods") or {}).get("rsa")
    if method is None:
        raise SystemExit(f"compare.py: {path} has no `rsa` method (is it an `rsa eval` summary?)")
    table = method.get("per_step") or []
    settings = {k: v for k, v in (method.get("config") or {}).items() if k in PAPER_SETTINGS}
    final = table[-1].get("mean_accuracy") if table else None
    first = table[0].get("mean_accuracy") if table else None
    return [Measurement(f"{path} [{data.get('task')}]", "rsa", len(data.get("problems") or []),
                        final, method.get("accuracy"), first, settings)]


def _mean(rows: Iterable[dict[str, Any]]) -> float | None:
    values = [float(r["mean_accuracy"]) for r in rows if r.get("mean_accuracy") is not None]
    return sum(values) / len(values) if values else None


READERS = {"lm-eval": read_lm_eval, "inspect": read_inspect, "rsa": read_rsa_summary}


def measure(paths: Iterable[str | Path]) -> list[Measurement]:
    """Every measurement in the given results."""
    return [m for p in find_results(paths) for m in READERS[_framework(p) or ""](p)]


def pooled(measurements: list[Measurement], attr: str) -> float | None:
    """Problem-weighted mean of one accuracy over the measurements that have it."""
    pairs = [(getattr(m, attr), m.problems) for m in measurements
             if getattr(m, attr) is not None and m.problems]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None


# ------------------------------------------------------------------------------- report

def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def report(benchmark: str, measurements: list[Measurement]) -> str:
    """The comparison table as text."""
    paper = PAPER[benchmark]
    problems = sum(m.problems for m in measurements)
    lines = [f"{paper['name']}, Qwen3-4B-Instruct-2507 in the paper "
             f"(N=16 K=4 T=10, temperature 1.0, 8192 tokens per generation)"]
    for m in measurements:
        shown = " ".join(f"{k}={v}" for k, v in m.settings.items())
        lines.append(f"  measured: {m.source} ({m.framework}, {m.problems} problems{', ' + shown if shown else ''})")
    rows = [
        ("single sample (step-1 mean accuracy)", pct(pooled(measurements, "first_mean")),
         paper["single"]),
        ("RSA Pass@1 (final mean accuracy)", pct(pooled(measurements, "final_mean")),
         paper["rsa"]),
        # the paper reports no majority vote over RSA's final population
        ("RSA chosen answer (majority vote)", pct(pooled(measurements, "chosen")), None),
    ]
    width = max(len(r[0]) for r in rows)
    lines.append(f"{'metric (%)':<{width}}  {'measured':>9}  paper")
    for label, measured, ref in rows:
        lines.append(f"{label:<{width}}  {measured:>9}  {ref if ref else 'not recorded'}")
    if paper["self_refine"] or paper["majority_vote"]:
        extra = ", ".join(f"{k.replace('_', ' ')} {v}" for k in ("self_refine", "majority_vote")
                          if (v := paper[k]))
        lines.append(f"paper baselines (for `rsa eval --compare`-style runs): {extra}")
    off = {k: v for m in measurements for k, v in m.settings.items() if PAPER_SETTINGS[k] != v}
    if off:
        lines.append("note: measured with " + " ".join(f"{k}={v}" for k, v in off.items())
                     + "; the paper used population=16 aggregation_size=4 steps=10")
    lines.append(f"problems measured: {problems}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", choices=sorted(PAPER))
    parser.add_argument("results", nargs="+", help="results file(s) or directories")
    args = parser.parse_args(argv)
    print(report(args.benchmark, measure(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
