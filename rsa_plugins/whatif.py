"""What-if: replay a finished full-length trace under early-stop rules.

For each rule, each problem stops where a real run with the rule and the same seeds would have
stopped: the rule reads only the step metrics the trace holds, and the generations up to that
step are the ones the trace holds (seeds and subsets are hashes of the run's seed, problem, step
and slot).  Its answer is the selection from that step's population, as the loop makes it.  So
the saved generations and tokens, and the answers that change, are what the rule would have
done on this run; a user runs the full schedule once, then picks a rule on evidence.

Beside the rules: RSA cut at each fixed step, and majority vote over the first m samples of
step 1 (m = 1..N), as accuracy against generations per problem.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RSAConfig
from .equivalence import vote
from .policies import EarlyStop, stop_reason
from .selection import select
from .trace import candidate_from_record, load
from .types import Candidate
from .validate import ConfigError, check_known

#: the rules `sweep` expands to
SWEEP = (EarlyStop("unanimous", 1), EarlyStop("unanimous", 2), EarlyStop("consensus", 1, 0.8),
         EarlyStop("consensus", 1, 0.9), EarlyStop("consensus", 1, 0.95),
         EarlyStop("consensus", 1, 0.99))


@dataclass
class _Problem:
    id: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    generations: list[list[Candidate]] = field(default_factory=list)
    kind: str = "general"


@dataclass
class Outcome:
    """One rule on one trace: generations and tokens used (per problem, averaged, and in all),
    what it saved against the full run, the answers it changed and its accuracy."""

    rule: str
    problems: int
    generations: int
    tokens: int
    saved_generations: int
    saved_tokens: int
    changed: int
    accuracy: float | None
    majority_at_matched: float | None  # majority vote of step 1 at the same generations
    stopped_at: dict[int, int]  # step -> problems stopped there

    @property
    def per_problem(self) -> float:
        return self.generations / self.problems if self.problems else 0.0


@dataclass
class WhatIf:
    """The replay of one trace: the full run, each rule, and the curves to plot."""

    path: Path
    population: int
    steps: int
    full: Outcome
    rules: list[Outcome]
    rsa_curve: list[tuple[float, float]]  # (generations per problem, accuracy) at each step
    majority_curve: list[tuple[float, float]]  # (samples, accuracy) of step-1 majority vote


def parse_rule(spec: str) -> list[EarlyStop]:
    """``early_stop=consensus,early_stop_confidence=0.9`` (the run's option names), or
    ``sweep`` for a set of rules and thresholds."""
    if spec.strip() == "sweep":
        return list(SWEEP)
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"--what-if: expected name=value, got {part!r} (e.g. "
                              "early_stop=consensus,early_stop_confidence=0.9, or sweep)")
        fields[key.strip()] = value.strip()
    check_known("--what-if option", fields, ("early_stop", "early_stop_patience",
                                              "early_stop_confidence"))
    cfg = RSAConfig(**fields)  # validated as a run's options are
    if cfg.early_stop == "never":
        raise ConfigError("--what-if: early_stop must be a rule (unanimous or consensus)")
    return [EarlyStop.of(cfg)]


def describe(rule: EarlyStop) -> str:
    return rule.rule + (f", confidence {rule.confidence:g}" if rule.rule == "consensus" else "") \
        + (f", patience {rule.patience}" if rule.patience != 1 else "")


def replay(path: str | Path, rules: Sequence[EarlyStop]) -> WhatIf:
    """Replay the full-length trace at `path` under each of `rules`."""
    path = Path(path)
    events = load(path)
    runs = [e for e in events if e.get("event") == "run"]
    if not runs:
        raise ValueError(f"{path} is not an RSA trace (no 'run' event)")
    cfg = RSAConfig(**{k: v for k, v in runs[0]["config"].items()
                       if k in RSAConfig.__dataclass_fields__ and k != "stop"})
    problems = _problems(events, cfg)
    short = [p.id for p in problems if len(p.steps) < cfg.steps  # a full run ends a problem
             and any(c.completion.ok for c in p.generations[-1])]  # early only when a step failed
    if not problems or short:
        raise ValueError(f"{path}: what-if needs a finished full-length trace (steps={cfg.steps}); "
                         f"{len(short) or 'no'} problem(s) did not finish every step")
    if cfg.early_stop != "never":
        raise ValueError(f"{path} was run with early_stop={cfg.early_stop}: replay a trace of "
                         "the full schedule (early_stop=never)")
    full = _outcome("full run (never)", EarlyStop(), problems, cfg)
    return WhatIf(path, cfg.population, cfg.steps, full,
                  [_outcome(describe(r), r, problems, cfg) for r in rules],
                  _rsa_curve(problems, cfg), _majority_curve(problems, cfg))


def _problems(events: list[dict[str, Any]], cfg: RSAConfig) -> list[_Problem]:
    steps: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    gens: dict[tuple[str, int], dict[int, Candidate]] = defaultdict(dict)
    kinds: dict[str, str] = {}
    for ev in events:
        kind = ev.get("event")
        if kind == "step":
            steps[ev["problem"]][ev["step"]] = ev["metrics"]
        elif kind == "generation":
            old = gens[(ev["problem"], ev["step"])].get(ev["slot"])
            if old is None or not old.completion.ok or ev.get("error") is None:
                gens[(ev["problem"], ev["step"])][ev["slot"]] = candidate_from_record(ev)
        elif kind == "result":
            kinds[ev["problem"]] = ev.get("kind") or "general"
    out = []
    for pid, done in steps.items():
        p = _Problem(pid, kind=kinds.get(pid, cfg.kind if cfg.kind != "auto" else "general"))
        for t in sorted(done):
            p.steps.append(done[t])
            p.generations.append([gens[(pid, t)][s] for s in sorted(gens[(pid, t)])])
        out.append(p)
    return out


def _stop_step(p: _Problem, rule: EarlyStop, cfg: RSAConfig) -> int:
    for t in range(1, len(p.steps) + 1):
        if t < cfg.steps and stop_reason(rule, p.steps[:t], p.generations[t - 1]) is not None:
            return t
    return len(p.steps)


def _population(p: _Problem, t: int) -> list[Candidate]:
    """The population after step `t`, as the loop keeps it (a step whose every generation
    failed leaves the previous population)."""
    pop: list[Candidate] = []
    for gens in p.generations[:t]:
        if any(c.completion.ok for c in gens) or not any(c.completion.ok for c in pop):
            pop = gens
    return pop


def _choice(p: _Problem, t: int, cfg: RSAConfig) -> Candidate | None:
    pop = _population(p, t)
    chosen, _ = select(pop, p.kind, cfg.selection, cfg.seed, p.id)
    return pop[chosen] if chosen is not None else None


def _tokens(p: _Problem, t: int) -> int:
    return sum(m["prompt_tokens"] + m["completion_tokens"] for m in p.steps[:t])


def _accuracy(picks: list[Candidate | None]) -> float | None:
    scores = [c.score for c in picks if c is not None]
    if not picks or any(s is None for s in scores):
        return None
    return sum(1 for c in picks if c is not None and (c.score or 0) >= 1.0) / len(picks)


def _outcome(name: str, rule: EarlyStop, problems: list[_Problem], cfg: RSAConfig) -> Outcome:
    n = cfg.population
    stops = [_stop_step(p, rule, cfg) for p in problems]
    picks = [_choice(p, t, cfg) for p, t in zip(problems, stops)]
    full = [_choice(p, len(p.steps), cfg) for p in problems]
    gens = sum(n * t for t in stops)
    tokens = sum(_tokens(p, t) for p, t in zip(problems, stops))
    all_gens = sum(n * len(p.steps) for p in problems)
    all_tokens = sum(_tokens(p, len(p.steps)) for p in problems)
    changed = sum(1 for a, b in zip(picks, full)
                  if (a.answer if a else None) != (b.answer if b else None))
    at: dict[int, int] = defaultdict(int)
    for p, t in zip(problems, stops):
        if t < len(p.steps):
            at[t] += 1
    matched = min(n, max(1, round(gens / len(problems))))
    return Outcome(name, len(problems), gens, tokens, all_gens - gens, all_tokens - tokens,
                   changed, _accuracy(picks), _majority(problems, cfg, matched), dict(at))


def _majority(problems: list[_Problem], cfg: RSAConfig, m: int) -> float | None:
    """Accuracy of majority vote over the first `m` samples of step 1 (slot order)."""
    picks: list[Candidate | None] = []
    for p in problems:
        first = [c for c in p.generations[0][:m] if c.completion.ok]
        best, _ = vote([c.answer for c in first], p.kind)
        picks.append(first[best] if best is not None else (first[0] if first else None))
    return _accuracy(picks)


def _rsa_curve(problems: list[_Problem], cfg: RSAConfig) -> list[tuple[float, float]]:
    out = []
    for t in range(1, cfg.steps + 1):
        acc = _accuracy([_choice(p, min(t, len(p.steps)), cfg) for p in problems])
        if acc is not None:
            out.append((float(cfg.population * t), acc))
    return out


def _majority_curve(problems: list[_Problem], cfg: RSAConfig) -> list[tuple[float, float]]:
    out = []
    for m in range(1, cfg.population + 1):
        acc = _majority(problems, cfg, m)
        if acc is not None:
            out.append((float(m), acc))
    return out


def table(w: WhatIf) -> str:
    """The what-if table: one line per rule, the full run first."""
    head = ["rule", "gen/problem", "saved_gen", "saved_tok", "changed", "accuracy",
            "majority@same", "stopped at step (problems)"]
    rows = []
    for o in [w.full, *w.rules]:
        stops = " ".join(f"{t}:{k}" for t, k in sorted(o.stopped_at.items())) or "-"
        rows.append([o.rule, f"{o.per_problem:.1f}",
                     f"{o.saved_generations} ({o.saved_generations / max(1, w.full.generations):.0%})",
                     f"{o.saved_tokens} ({o.saved_tokens / max(1, w.full.tokens):.0%})",
                     f"{o.changed}/{o.problems}",
                     *("-" if x is None else f"{x:.3f}" for x in (o.accuracy,
                                                                  o.majority_at_matched)),
                     stops])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(wd) for c, wd in zip(r, widths)).rstrip()
             for r in [head, *rows]]
    return "\n".join(lines)


def print_report(traces: Sequence[Path], specs: Sequence[str], png: Path | None, plot_it: bool,
                 free_path: Callable[[Path], Path]) -> int:
    """``rsa report TRACE --what-if RULE``: per trace, the table and (with `plot_it`) the
    plot, at `png` or a free ``whatif.png`` beside the trace."""
    rules = [r for spec in specs for r in parse_rule(spec)]
    replays = [replay(p, rules) for p in traces]
    for i, w in enumerate(replays):
        print(("\n" if i else "") + f"what-if on {w.path} (N={w.population}, T={w.steps}, "
              f"{w.full.problems} problems):")
        print(table(w))
        if plot_it:
            out = png if png is not None and len(replays) == 1 else \
                free_path(w.path.parent / "whatif.png")
            try:
                print(f"plot: {plot(w, out)}")
            except ImportError:
                print("no plot: pip install matplotlib")
    return 0


def plot(w: WhatIf, out: str | Path) -> Path:
    """Accuracy against generations per problem: each rule, RSA cut at each step, and majority
    vote of step-1 samples at the same compute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.6))
    if w.rsa_curve:
        ax.plot(*zip(*w.rsa_curve), "o-", color="tab:blue", label="RSA cut at step t")
    if w.majority_curve:
        ax.plot(*zip(*w.majority_curve), "s--", color="tab:gray", label="majority of m samples")
    for i, o in enumerate(w.rules):  # distinct shapes: rules that agree draw on one point
        if o.accuracy is not None:
            ax.plot([o.per_problem], [o.accuracy], "DPX^v<>*"[i % 8], markersize=11 - i % 4,
                    color=f"C{(i + 1) % 10}", label=o.rule, alpha=0.85)
    ax.set_xlabel("generations per problem")
    ax.set_ylabel("accuracy of the final answer")
    ax.set_title(f"what-if on {w.path.name} (N={w.population}, T={w.steps})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
