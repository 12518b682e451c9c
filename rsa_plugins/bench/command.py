"""``rsa bench``'s command line: arguments and their checks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .modes import OFFLINE_MODES, ratios
from .workload import load_batches, workload
from .run import ENGINE_ARGS, BenchEngine, run_bench, warn_differ


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rsa bench", description="RSA over in-process vLLM against raw generation of the same token work.")
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--engine", choices=("offline", "async"), default="offline",
                   help="offline: vllm.LLM (modes lockstep, raw); async: AsyncLLM (modes "
                   "barrier-free, barrier-free-index, bound)")
    p.add_argument("--modes", default=None, help="comma-separated modes, run in this order "
                   "(default: all of the engine's; barrier-free-spread only with "
                   "--data-parallel-size > 1)")
    p.add_argument("--save-batches", type=Path, default=None, metavar="FILE",
                   help="write what lockstep sent (per step) to FILE (.gz: compressed)")
    p.add_argument("--replay", type=Path, default=None, metavar="FILE",
                   help="raw and bound replay FILE (from --save-batches) when no mode of this "
                   "invocation recorded the work")
    p.add_argument("--load-format", default=None, help="vLLM load format; dummy = random weights")
    p.add_argument("--problems", type=int, default=30, help="synthetic problems (30)")
    p.add_argument("--population", "-N", type=int, default=16, help="N (16)")
    p.add_argument("--aggregation-size", "-K", type=int, default=4, help="K (4)")
    p.add_argument("--steps", "-T", type=int, default=4, help="T (4)")
    p.add_argument("--max-tokens", type=int, default=8192, help="longest generation (8192)")
    p.add_argument("--median", type=int, default=256, help="median generation length (256)")
    p.add_argument("--sigma", type=float, default=1.2, help="log-normal sigma of lengths (1.2)")
    p.add_argument("--max-model-len", type=int, default=40960, help="context length (40960)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / compilation")
    p.add_argument("--data-parallel-size", type=int, default=1,
                   help="vLLM engine cores behind the async engine (vLLM's data parallelism)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None, metavar="N",
                   help="vLLM's scheduler budget per step (default: what vLLM gives its offline "
                   "engine on this hardware, for both engines)")
    p.add_argument("--max-num-seqs", type=int, default=None, metavar="N",
                   help="vLLM's most sequences per step (default: the offline engine's)")
    p.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="run every mode R times (in rounds); figures are medians, with min-max")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON file the figures are merged into")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rsa bench``.  ``--next`` starts another invocation in the same
    process, on the same engine (started once): it takes the first one's arguments but its
    files (``--out``, ``--save-batches``, ``--replay``), then its own; it may not change the
    engine's."""
    parsed = parse_pieces(sys.argv[1:] if argv is None else argv)
    shared = BenchEngine(parsed[0]) if len(parsed) > 1 else None
    try:
        for args in parsed:
            run_bench(args, shared)
            report(args)
    finally:
        if shared is not None:
            shared.close()
    return 0


def pieces(argv: Sequence[str]) -> list[list[str]]:
    """The words of each invocation in `argv` (split at ``--next``)."""
    out: list[list[str]] = [[]]
    for w in argv:
        if w == "--next":
            out.append([])
        else:
            out[-1].append(w)
    return out


def parse_pieces(argv: Sequence[str]) -> list[argparse.Namespace]:
    """Every invocation's checked arguments (a later one with the first one's arguments but
    its files before its own), all checked before any engine starts."""
    split = pieces(argv)
    first = parse(split[0])
    parsed = [first] + [parse(inherited_words(first) + words) for words in split[1:]]
    _check_pieces(parsed)
    return parsed


#: what a ``--next`` piece does not take from the first: the files it reads and writes
FILE_ARGS = ("out", "save_batches", "replay", "help")


def inherited_words(args: argparse.Namespace) -> list[str]:
    """The command-line words that give `args` but its files (values not at their default)."""
    words: list[str] = []
    for action in build_parser()._actions:
        value = getattr(args, action.dest, None)
        if action.dest not in FILE_ARGS and value is not None and value != action.default:
            words += [action.option_strings[-1]] + ([] if action.nargs == 0 else [str(value)])
    return words


def _check_pieces(parsed: list[argparse.Namespace]) -> None:
    """Invocations joined by ``--next`` share the engine and never each other's files."""
    first = {k: getattr(parsed[0], k) for k in ENGINE_ARGS}
    outs: set[Path] = set()
    for i, args in enumerate(parsed):
        changed = [k for k in ENGINE_ARGS if getattr(args, k) != first[k]]
        if changed:
            raise SystemExit(f"rsa bench: --next piece {i + 1} changes engine arguments "
                             f"({', '.join('--' + k.replace('_', '-') for k in changed)}): "
                             "pieces share one engine; run another rsa bench instead")
        for path in (args.out, args.save_batches):
            if path is not None and path in outs:
                raise SystemExit(f"rsa bench: --next piece {i + 1} writes {path} again: give "
                                 "each piece its own --out and --save-batches")
        outs |= {p for p in (args.out, args.save_batches) if p is not None}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The checked arguments of one invocation (``argv`` kept in them for the record)."""
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    for name, low in (("problems", 1), ("population", 1), ("aggregation_size", 1), ("steps", 1),
                      ("max_tokens", 16), ("median", 1), ("max_model_len", 64),
                      ("data_parallel_size", 1), ("repeat", 1)):
        if getattr(args, name) < low:
            raise SystemExit(f"rsa bench: --{name.replace('_', '-')} must be >= {low}, "
                             f"got {getattr(args, name)}")
    for name in ("max_num_batched_tokens", "max_num_seqs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"rsa bench: --{name.replace('_', '-')} must be >= 1, "
                             f"got {getattr(args, name)}")
    if args.aggregation_size > args.population:
        raise SystemExit(f"rsa bench: --aggregation-size must be between 1 and --population "
                         f"({args.population}), got {args.aggregation_size}")
    if args.modes is None:
        spread = ("barrier-free-spread",) if args.data_parallel_size > 1 else ()
        args.modes = ",".join(OFFLINE_MODES if args.engine == "offline" else
                              ("barrier-free", "barrier-free-index", *spread, "bound"))
    if args.data_parallel_size > 1 and args.engine != "async":
        raise SystemExit("rsa bench: --data-parallel-size needs --engine async (one AsyncLLM "
                         "over several engine cores)")
    if args.replay is not None and not args.replay.exists():
        raise SystemExit(f"rsa bench: --replay {args.replay}: no such file")
    if args.replay is not None:
        load_batches(args.replay, workload(args))  # another workload's file: refused now
    return args


def report(args: argparse.Namespace) -> None:
    """Print the ratios (from medians) of everything in ``--out``, and warn again when its
    modes ran with different engine settings."""
    if not args.out or not args.out.exists():
        return
    data = json.loads(args.out.read_text())
    print(json.dumps({"ratios": data.get("ratios", ratios(data))}, indent=1))
    if data.get("engine_settings_differ"):
        warn_differ(args.out, data["engine_settings_differ"])
