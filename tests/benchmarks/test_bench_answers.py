"""Benchmark: answer processing on free text vs boxed numbers (issue 15, goal <= 1.5x).

The same RSA workload (8 problems, N=16, K=4, T=2) runs through `rsa_plugins.arun` on an
in-memory engine that answers instantly, once with boxed numbers and once with a different
free-text sentence for every generation (texts of the same length), so the time is RSA's own
work: extraction, scoring, per-step metrics and the final vote.  Also timed: one `vote` over 16 distinct free-text
answers and over 16 mixed math answers, with cold caches.  Prints the figures; asserts behaviour
only (the work done, and that prose never reaches math-verify).

    pytest tests/benchmarks/test_bench_answers.py -s

With ``RSA_BENCH_ANSWERS_BASELINE=<git ref>`` it also times that ref's ``answers.py`` (loaded
into a temporary module and patched into the loop) for a before/after comparison.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest

import rsa_plugins
from rsa_plugins import equivalence
from rsa_plugins.engines.base import Engine
from rsa_plugins.types import Completion, Request

PROBLEMS, N, K, T = 8, 16, 4, 2
ROOT = Path(__file__).resolve().parents[2]
WORDS = ("river", "lantern", "granite", "orchard", "signal", "harbour", "meadow", "engine",
         "velvet", "compass", "thunder", "archive", "pepper", "glacier", "canvas", "falcon")
FREE_TEXT = [f"I would say the {WORDS[i]} matters most here, for {i + 2} separate reasons."
             for i in range(16)]
MIXED_MATH = ["1/2", "\\frac{1}{2}", "0.5", "x^2+2x+1", "(x+1)^2", "\\sqrt{2}", "2^{1/2}", "3",
              "3.0", "\\pi", "\\frac{\\pi}{2}", "(1,2)", "[1,2]", "x=5", "5", "\\{1,2\\}"]


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


class Instant(Engine):
    """Answers at once: a boxed 42/41/7, or a free-text sentence unique to the generation."""

    name = "instant"

    def __init__(self, free_text: bool, salt: str) -> None:
        self.free_text, self.salt, self.calls = free_text, salt, 0

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        out = []
        for req in requests:
            comps = []
            for i in range(req.n):
                self.calls += 1
                h = _h(self.salt, req.seed, i)  # seeds differ per problem, step and slot
                words = f"Weighing it up, the {WORDS[h % 16]} near the {WORDS[h // 16 % 16]} seems"
                if self.free_text:  # a free-text answer of its own, on a marked last line
                    text = f"{words} to me the deciding point.\nANSWER: note {h % 100_000} it is"
                else:  # as long, with one of three boxed numbers
                    text = f"{words} to me the deciding point, so it is \\boxed{{{(42, 41, 7)[h % 3]}}}."
                prompt_tokens = len(req.messages[-1]["content"]) // 4
                comps.append(Completion(text=text, prompt_tokens=prompt_tokens,
                                        completion_tokens=len(text) // 4, finish_reason="stop"))
            out.append(comps)
        return out


def run_workload(free_text: bool, salt: str
                 ) -> tuple[tuple[float, float], list[rsa_plugins.RSAResult], int]:
    """((wall s, CPU s), results, generations) of one whole run."""
    engine = Instant(free_text, salt)
    target = "The orchard, clearly." if free_text else "42"
    problems = [{"prompt": f"Question {salt}-{p}: think it over and reply.", "target": target}
                for p in range(PROBLEMS)]
    start, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(rsa_plugins.arun(problems, model=engine, population=N,
                                           aggregation_size=K, steps=T, progress=False))
    return (time.perf_counter() - start, time.process_time() - cpu), results, engine.calls


def time_vote(vote: Callable, answers_list: list[str], reset: Callable[[], None]) -> float:
    reset()
    start = time.perf_counter()
    vote(answers_list, "general")
    return time.perf_counter() - start


def load_baseline(ref: str) -> ModuleType:
    """`answers.py` as it is at git ref `ref`, as a stand-alone module."""
    source = subprocess.run(["git", "show", f"{ref}:rsa_plugins/answers.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rsa_answers_baseline_{os.getpid()}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("rsa_answers_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(show: Callable[..., None], label: str, reset: Callable[[], None], vote: Callable,
            repeats: int) -> dict[str, float]:
    """Median times of the two workloads (interleaved, fresh texts each time) and of votes.

    The CPU-time ratio is the steadier figure on a machine shared with other work."""
    vote(["1/2", "\\frac{1}{2}"], "general")  # import math-verify and sympy outside the timings
    run_workload(False, f"{label}-warm")
    boxed, free = [], []
    for r in range(repeats):
        boxed.append(run_workload(False, f"{label}b{r}")[0])
        free.append(run_workload(True, f"{label}f{r}")[0])
    figures = {}
    for i, clock in enumerate(("wall", "cpu")):
        figures[f"boxed_{clock}_s"] = statistics.median(t[i] for t in boxed)
        figures[f"free_text_{clock}_s"] = statistics.median(t[i] for t in free)
        figures[f"ratio_{clock}"] = figures[f"free_text_{clock}_s"] / figures[f"boxed_{clock}_s"]
    figures["vote_free_text_ms"] = 1000 * time_vote(vote, FREE_TEXT, reset)
    figures["vote_mixed_math_ms"] = 1000 * time_vote(vote, MIXED_MATH, reset)
    show(f"{label}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
    return figures


@pytest.mark.benchmark
def test_free_text_costs_about_what_boxed_costs(show, monkeypatch):
    parses: list[str] = []
    real_parse = equivalence._mv_parse
    monkeypatch.setattr(equivalence, "_mv_parse", lambda text: parses.append(text) or real_parse(text))

    # behaviour: the whole work is done, free text stays away from math-verify
    _, results, calls = run_workload(True, "check")
    assert calls == PROBLEMS * N * T and all(len(r.population) == N for r in results)
    assert all(r.steps[-1]["distinct_answers"] == N for r in results)
    assert parses == []
    _, results, calls = run_workload(False, "check")
    assert calls == PROBLEMS * N * T and all(r.answer in {"42", "41", "7"} for r in results)
    assert equivalence.vote(MIXED_MATH)[1]["1/2"] == 3  # 1/2 = \frac{1}{2} = 0.5

    show(f"\nanswer processing, {PROBLEMS} problems, N={N}, K={K}, T={T}, instant engine:")
    ref = os.environ.get("RSA_BENCH_ANSWERS_BASELINE")
    if ref:
        old = load_baseline(ref)
        with monkeypatch.context() as patch:
            for module in ("rsa_plugins.loop", "rsa_plugins.metrics"):
                for name in ("cluster", "vote", "equivalent", "extract"):
                    if hasattr(sys.modules[module], name):
                        patch.setattr(f"{module}.{name}", getattr(old, name))
            measure(show, f"before ({ref})", old._math_verify_equal.cache_clear, old.vote, 1)
    measure(show, "after", equivalence._reset_caches, equivalence.vote, 15)
