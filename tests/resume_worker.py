"""Runs a deterministic RSA job writing a trace; the kill/resume test SIGKILLs it mid-run.

    python tests/resume_worker.py TRACE [DELAY]
"""

from __future__ import annotations

import asyncio
import sys

from fakes import ScriptedEngine  # run as a script, its folder is on sys.path
from rsa_plugins import RSALoop, Problem, RSAConfig

PROBLEMS = [Problem(f"Problem {i}: compute it and put the answer in \\boxed{{}}.", id=f"p{i}",
                    target="42") for i in range(6)]
CONFIG = RSAConfig(population=4, aggregation_size=2, steps=4, seed=9)


def job(trace: str, delay: float) -> list:
    engine = ScriptedEngine(delay=delay)
    return asyncio.run(RSALoop(engine, CONFIG, trace=trace, progress=False).run(PROBLEMS)), engine


if __name__ == "__main__":
    job(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.2)
