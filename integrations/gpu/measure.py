"""The H200 measurements of docs/performance.md, in pieces that each fit one device call.

Run on the GPU machine from the project's root, after vLLM is staged (``/tmp/site``) and the
Qwen3-4B-shaped model's config and tokenizer are in ``--model`` (``qwen4b_shape.py``), one
device call per line (each under 9 minutes; README.md beside this file has the calls)::

    python3 integrations/gpu/measure.py offline --out $OUT
    python3 integrations/gpu/measure.py async-light lmeval --out $OUT
    python3 integrations/gpu/measure.py async-heavy lmeval-2 --out $OUT

Pieces, each in a process of its own (seconds: estimates from earlier H200 runs of the same
work, engine start of ~90 s included):

- ``offline`` (~450 s): lockstep and raw on the light workload, 3 runs each; then, on the same
  engine (``--next``), lockstep on the heavy workload once.
- ``async-light`` (~270 s): barrier-free, barrier-free-index and bound, light workload, 3 runs.
- ``async-heavy`` (~390 s): barrier-free and bound on the heavy workload, once each;
  ``async-heavy-2`` the same again into another file (``merge`` adds its runs).
- ``lmeval`` / ``lmeval-2`` (~170 s): ``lm_eval --model rsa-vllm``, 64 reasoning-gym problems,
  N=16, K=4, T=3, 256 tokens, one GPU.

Every piece writes as it goes under ``--out``: ``rsa bench`` rewrites its JSON after every run,
the log is flushed line by line, and ``measure.json`` (what ran, its command, exit status and
seconds) after every piece; a piece cut short keeps what it measured.  A piece is skipped when
its estimate no longer fits ``--budget`` seconds.  At most 8 files come back from a device
call: pieces write 2-3 files each, so give a call at most two pieces (``measure.json`` is
one more).

Here, afterwards: ``python integrations/gpu/measure.py merge RESULTS_DIR`` joins each
workload's offline and async files into one (``light.json``, ``heavy.json``) with the ratios
from the medians and the engine-settings check of ``rsa bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIGHT = ["--median", "48", "--sigma", "1.0", "--max-tokens", "1024"]
HEAVY = ["--median", "192", "--sigma", "1.2", "--max-tokens", "8192"]
ENV = {"VLLM_USE_FLASHINFER_SAMPLER": "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "VLLM_NO_USAGE_STATS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def bench(model: str, out: Path, *pieces: list[str]) -> list[str]:
    """``rsa bench`` arguments: the common ones, then each piece (joined by ``--next``)."""
    common = ["--model", model, "--load-format", "dummy", "--gpu-memory-utilization", "0.9"]
    words = list(common)
    for i, piece in enumerate(pieces):
        words += (["--next"] if i else []) + [str(w).replace("{out}", str(out)) for w in piece]
    return ["-c", "import sys; from rsa_plugins.bench import main; sys.exit(main(sys.argv[1:]))",
            *words]


def lm_eval(model: str, out: Path, run: int) -> list[str]:
    args = (f"pretrained={model},load_format=dummy,population=16,aggregation_size=4,steps=3,"
            f"max_model_len=8192,gpu_memory_utilization=0.9,seed=0,trace={out}/lm{run}.jsonl")
    return ["-m", "rsa_plugins.adapters.lm_eval", "--model", "rsa-vllm", "--model_args", args,
            "--tasks", "rsa_rg_arithmetic", "--include_path", str(ROOT / "tasks/lm_eval"),
            "--metadata", json.dumps({"rg_size": 64}), "--gen_kwargs", "max_gen_toks=256",
            "--output_path", f"{out}/lm{run}"]


def pieces(model: str, out: Path) -> dict[str, tuple[int, list[str]]]:
    """name -> (estimated seconds, python arguments)."""
    return {
        "offline": (450, bench(model, out, ["--engine", "offline", "--modes", "lockstep,raw",
                                            "--repeat", "3", *LIGHT,
                                            "--out", "{out}/light_offline.json"],
                               ["--modes", "lockstep", "--repeat", "1", *HEAVY,
                                "--out", "{out}/heavy_offline.json"])),
        "async-light": (270, bench(model, out, ["--engine", "async", "--modes",
                                                "barrier-free,barrier-free-index,bound",
                                                "--repeat", "3", *LIGHT,
                                                "--out", "{out}/light_async.json"])),
        "async-heavy": (390, bench(model, out, ["--engine", "async", "--modes",
                                                "barrier-free,bound", *HEAVY,
                                                "--out", "{out}/heavy_async.json"])),
        "async-heavy-2": (390, bench(model, out, ["--engine", "async", "--modes",
                                                  "barrier-free,bound", *HEAVY,
                                                  "--out", "{out}/heavy_async_2.json"])),
        "lmeval": (170, lm_eval(model, out, 1)),
        "lmeval-2": (170, lm_eval(model, out, 2)),
    }


def run(names: list[str], model: str, out: Path, budget: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    table = pieces(model, out)
    bad = [n for n in names if n not in table]
    if bad:
        raise SystemExit(f"measure: unknown piece(s) {', '.join(bad)}; pieces: {', '.join(table)}")
    if not (Path(model) / "config.json").exists():
        raise SystemExit(f"measure: --model {model} has no config.json (qwen4b_shape.py writes one)")
    env = {**os.environ, **ENV,
           "PYTHONPATH": os.pathsep.join(p for p in ("/tmp/site", str(ROOT),
                                                     os.environ.get("PYTHONPATH")) if p)}
    record_path, record = out / "measure.json", []
    started, worst = time.monotonic(), 0
    for name in names:
        estimate, argv = table[name]
        used = time.monotonic() - started
        if used + estimate > budget:
            print(f"[measure] skip {name}: ~{estimate} s after {used:.0f} s > --budget {budget:.0f}",
                  flush=True)
            record.append({"piece": name, "skipped": True, "after_s": round(used)})
            continue
        command = [sys.executable, *argv]
        print(f"[measure] {name}: {shlex.join(command)}", flush=True)
        t0 = time.monotonic()
        with open(out / f"{name}.log", "w") as log:
            proc = subprocess.run(command, cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        wall = time.monotonic() - t0
        print(f"[measure] {name}: exit {proc.returncode} after {wall:.1f} s", flush=True)
        entry = {"piece": name, "command": shlex.join(command), "rc": proc.returncode,
                 "wall_s": round(wall, 1), "estimate_s": estimate}
        if name.startswith("lmeval"):
            entry.update(lm_eval_summary(out / f"lm{name[-1] if name[-1].isdigit() else 1}"))
        record.append(entry)
        record_path.write_text(json.dumps(record, indent=1))
        worst = worst or proc.returncode
    record_path.write_text(json.dumps(record, indent=1))
    return worst


def lm_eval_summary(folder: Path) -> dict[str, object]:
    """From lm-eval's results file: its total time, the engine-busy figures and the span
    from the first request in to the last one out; the file is moved up to ``folder.json``
    (files deeper than two folders do not come back from the device)."""
    found = sorted(folder.glob("**/results_*.json"))
    if not found:
        return {"results": None}
    data = json.loads(found[-1].read_text())
    found[-1].replace(folder.with_suffix(".json"))
    rsa = data.get("config", {}).get("rsa", {})
    busy = (rsa.get("engine_stats") or {}).get("busy", {})
    return {"results": folder.with_suffix(".json").name,
            "total_evaluation_time_seconds": data.get("total_evaluation_time_seconds"),
            "engine_busy_fraction": rsa.get("engine_busy_fraction"),
            "first_request_to_last_s": busy.get("span_s"),
            "engine_settings": rsa.get("engine_settings")}


def merge(folder: Path) -> None:
    """Join ``<workload>_offline.json`` and ``<workload>_async*.json`` into ``<workload>.json``:
    modes side by side (a second async file's runs are added to the first's), ratios from the
    medians, and the engine-settings check."""
    from rsa_plugins.bench.run import _merge, summarize
    from rsa_plugins.engines.vllm_base import differing_settings

    for workload in ("light", "heavy"):
        parts = sorted(folder.glob(f"{workload}_*.json"))
        if not parts:
            continue
        target = folder / f"{workload}.json"
        target.unlink(missing_ok=True)
        modes: dict[str, dict] = {}
        origin: dict[str, dict[str, dict]] = {}  # mode -> file -> its engine settings
        for part in parts:
            data = json.loads(part.read_text())
            for key, value in data.items():
                if key.startswith("_setup"):
                    _merge(target, {key: value})
                elif isinstance(value, dict) and "runs" in value:
                    origin.setdefault(key, {})[part.name] = value.get("engine_settings", {})
                    if key in modes:  # more runs of a mode: figures again over all of them
                        runs = modes[key]["runs"] + value["runs"]
                        value = summarize(runs, value["engine"], value["engine_settings"])
                        differ = differing_settings(origin[key])
                        if differ:
                            value["engine_settings_runs_differ"] = differ
                            print(f"warning: {workload} {key}: runs with different engine "
                                  f"settings: {differ}", file=sys.stderr)
                    modes[key] = value
        _merge(target, modes)
        print(f"{target}: {json.dumps(json.loads(target.read_text())['ratios'])}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pieces", nargs="+", help="pieces to run in order, or: merge FOLDER")
    p.add_argument("--model", default=None, help="Qwen3-4B-shaped checkpoint dir (default: "
                   ".gpu/qwen4b if there, else /tmp/models/qwen4b)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "measure-out")))
    p.add_argument("--budget", type=float, default=550.0,
                   help="seconds this call may use; a piece that would not fit is skipped")
    args = p.parse_args(argv)
    if args.pieces[0] == "merge":
        sys.path.insert(0, str(ROOT))
        for folder in args.pieces[1:] or [str(args.out)]:
            merge(Path(folder))
        return 0
    model = args.model or next((str(p) for p in (ROOT / ".gpu/qwen4b", Path("/tmp/models/qwen4b"))
                                if (p / "config.json").exists()), "/tmp/models/qwen4b")
    return run(args.pieces, model, args.out, args.budget)


if __name__ == "__main__":
    sys.exit(main())
