"""A LiteLLM Router from ``router.yaml`` (two vLLM servers behind one model group), and RSA on it.

    python integrations/scale-out/router.py integrations/scale-out/router.yaml \\
        --task rg:basic_arithmetic --limit 4 -N 4 -K 2 -T 2 --max-tokens 32

From Python::

    from router import load_router          # this file
    router = load_router("integrations/scale-out/router.yaml")
    results = rsa_plugins.run(problems, model=router, population=16, aggregation_size=4,
                              steps=10, max_model_len=32768)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(value: Any) -> Any:
    """`value` with every ``${NAME}`` / ``${NAME:-default}`` in its strings replaced from the
    environment (a missing variable without a default is an error naming it)."""
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise KeyError(f"router config: environment variable {name} is not set (and has "
                           "no ${NAME:-default})")
        return default

    return _VAR.sub(sub, value)


def load_config(path: str | Path) -> dict[str, Any]:
    """The config file as a dict, variables expanded; checks there is a model group."""
    import yaml

    config = expand(yaml.safe_load(Path(path).read_text()) or {})
    models = config.get("model_list")
    if not isinstance(models, list) or not models:
        raise ValueError(f"{path}: model_list must list at least one deployment")
    for i, m in enumerate(models):
        if not isinstance(m, dict) or "model_name" not in m or "litellm_params" not in m:
            raise ValueError(f"{path}: model_list[{i}] needs model_name and litellm_params")
    return config


def load_router(path: str | Path, **router_settings: Any) -> Any:
    """A `litellm.Router` built from the file (keyword arguments override router_settings)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    config = load_config(path)
    settings = {**config.get("router_settings", {}), **router_settings}
    return litellm.Router(model_list=config["model_list"], **settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run RSA on reasoning-gym problems through the router; print a JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", type=Path, help="router YAML (model_list + router_settings)")
    p.add_argument("--task", default="rg:basic_arithmetic", help="rg:<reasoning-gym dataset>")
    p.add_argument("--limit", type=int, default=4, help="number of problems (4)")
    p.add_argument("-N", "--population", type=int, default=16)
    p.add_argument("-K", "--aggregation-size", type=int, default=4)
    p.add_argument("-T", "--steps", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--max-model-len", type=int, help="the servers' context length (the router "
                   "path does not ask the servers for it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", type=Path, help="JSONL trajectory")
    args = p.parse_args(argv)
    if not args.task.startswith("rg:"):
        p.error(f"--task must be rg:<reasoning-gym dataset>, got {args.task!r}")

    import rsa_plugins
    from rsa_plugins.reasoning_gym import reasoning_gym_problems

    problems = reasoning_gym_problems(args.task[3:], limit=args.limit, seed=args.seed)
    router = load_router(args.config)
    options: dict[str, Any] = {"max_tokens": args.max_tokens, "progress": False}
    if args.max_model_len:
        options["max_model_len"] = args.max_model_len
    results = rsa_plugins.run(problems, model=router, population=args.population,
                              aggregation_size=args.aggregation_size, steps=args.steps,
                              seed=args.seed, trace=args.trace, **options)
    final = [r.steps[-1] for r in results]
    summary = {
        "problems": len(results),
        "requested": sum(s["requested"] for r in results for s in r.steps),
        "failed": sum(s["failed"] for r in results for s in r.steps),
        "mean_accuracy": _mean(s.get("mean_accuracy") for s in final),
        "majority_accuracy": _mean(s.get("majority_accuracy") for s in final),
        "answers": [r.answer for r in results],
    }
    print(json.dumps(summary, default=str))
    return 0


def _mean(values: Any) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


if __name__ == "__main__":
    sys.exit(main())
