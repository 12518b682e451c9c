"""The benchmark's workload: synthetic AIME-sized problems, heavy-tailed forced lengths, and
the batches a mode sent, saved for a replay in another invocation."""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
from pathlib import Path
from typing import Any

from ..seeds import derive_seed
from ..types import Problem, Request


BATCHES_FORMAT = "rsa-bench-batches/1"

#: setup keys that must match for a replayed file to be the same token work
WORKLOAD_KEYS = ("problems", "population", "aggregation_size", "steps", "max_tokens",
                 "length_median", "length_sigma", "seed")

_WORDS = ("triangle", "integer", "prime", "sequence", "circle", "radius", "remainder", "digits",
          "probability", "polynomial", "roots", "modulo", "positive", "sum", "product", "divisor")

def synthetic_problems(count: int, seed: int = 0, words: int = 60) -> list[Problem]:
    """`count` AIME-sized math problems (about `words` words each, deterministic)."""
    out = []
    for i in range(count):
        rng = random.Random(derive_seed(seed, "bench-problem", i))
        body = " ".join(rng.choice(_WORDS) for _ in range(words))
        text = (f"Problem {i + 1}. Let n be the {body}. Find the remainder when n is divided by "
                f"1000. Put the final answer in \\boxed{{}}.")
        out.append(Problem(text, id=f"bench-{i}", target=str(rng.randrange(1000)), kind="math"))
    return out

class HeavyTail:
    """Generation length of a request: log-normal(median, sigma) clipped to [low, high].

    A function of the request's seed only, so every mode forces the same length on the
    same (problem, step, slot).
    """

    def __init__(self, median: int, sigma: float, high: int, low: int = 16) -> None:
        if median < 1 or sigma < 0 or high < low:
            raise ValueError(f"lengths need median >= 1, sigma >= 0 and max_tokens >= {low}; "
                             f"got median={median}, sigma={sigma}, max_tokens={high}")
        self.median, self.sigma, self.high, self.low = median, sigma, high, low

    def __call__(self, seed: int) -> int:
        z = random.Random(derive_seed("length", seed)).gauss(0.0, 1.0)
        return max(self.low, min(self.high, int(self.median * math.exp(self.sigma * z))))

    def forced(self, req: Request) -> dict[str, Any]:
        """SamplingParams fields that force the request's length (the engine's sampling hook)."""
        n = self(req.seed)
        return {"max_tokens": n, "min_tokens": n, "ignore_eos": True}

#: what a run sent to the engine, one list per engine call (lockstep: per step):
#: (prompt token ids, forced generation length) per request
Batches = list[list[tuple[list[int], int]]]

def save_batches(path: Path, batches: Batches, setup: dict[str, Any]) -> None:
    """Write what a mode sent (gzip when the name ends in ``.gz``) for a later ``--replay``."""
    data = json.dumps({"format": BATCHES_FORMAT, "setup": setup, "batches": batches})
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data.encode()))
    else:
        path.write_text(data)

def load_batches(path: Path, setup: dict[str, Any]) -> Batches:
    """Batches saved by ``--save-batches``; the workload must be the one asked for now."""
    raw = path.read_bytes()
    data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    if data.get("format") != BATCHES_FORMAT:
        raise SystemExit(f"rsa bench: {path} is not a file written by --save-batches")
    differ = [f"{k}={data['setup'].get(k)!r} (now {setup[k]!r})" for k in WORKLOAD_KEYS
              if data["setup"].get(k) != setup[k]]
    if differ:
        raise SystemExit(f"rsa bench: {path} holds another workload: {', '.join(differ)}")
    return [[(list(ids), int(n)) for ids, n in batch] for batch in data["batches"]]

def _forced(seed: int, n: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(seed=seed, temperature=1.0, max_tokens=n, min_tokens=n,
                          ignore_eos=True)

def workload(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs the same token work (checked when a file is replayed)."""
    return {"problems": args.problems, "population": args.population,
            "aggregation_size": args.aggregation_size, "steps": args.steps,
            "max_tokens": args.max_tokens, "length_median": args.median,
            "length_sigma": args.sigma, "seed": args.seed}
