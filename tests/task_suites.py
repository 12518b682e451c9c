"""lm-eval's own task files, pointed at local rows the format stub can solve.

`copy_task` reads a YAML from the installed lm-eval package at test time and writes a copy that
differs only in where the data comes from (``dataset_path: json`` + ``dataset_kwargs``), the
task name (so it does not clash with the shipped task) and ``dataset_name`` (gone).  An
``include:`` is resolved the way lm-eval resolves it (the included file, updated with the
including one), so the copy stands alone.  Everything else -- ``doc_to_text``, few-shot samples,
filters, ``generation_kwargs``, ``gen_prefix``, ``repeats`` -- is as shipped.

`math_rows` / `choice_rows` make gsm8k- and ARC-shaped rows whose questions `format_stub` solves.
`lm_eval` runs the stock ``lm_eval`` command and returns what it wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LM_EVAL_BIN = str(Path(sys.executable).parent / "lm_eval")
#: keys a copy may change; every other key must equal the shipped file's
CHANGED = {"task", "dataset_path", "dataset_kwargs", "dataset_name"}

NAMES = ["Tom", "Ann", "Lena", "Omar", "Priya", "Kofi", "Mia", "Ivan", "Sara", "Jun"]
THINGS = ["apples", "pens", "stamps", "marbles", "books", "cards", "shells", "coins"]


def lm_eval_tasks_dir() -> Path:
    """The ``lm_eval/tasks`` folder of the installed package."""
    spec = importlib.util.find_spec("lm_eval")
    assert spec is not None and spec.submodule_search_locations, "lm-eval is not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def shipped_config(relpath: str) -> dict[str, Any]:
    """A shipped task YAML with its ``include:`` resolved as lm-eval does."""
    path = lm_eval_tasks_dir() / relpath
    cfg = yaml.safe_load(path.read_text())
    include = cfg.pop("include", None)
    if include is None:
        return cfg
    merged: dict[str, Any] = {}
    for inc in [include] if isinstance(include, str) else include:
        merged.update(shipped_config(str((path.parent / inc).relative_to(lm_eval_tasks_dir()))))
    merged.update(cfg)
    return merged


def copy_task(relpath: str, dest: Path, task: str, data_files: dict[str, str]) -> Path:
    """Write lm-eval's ``relpath`` (e.g. ``gsm8k/gsm8k-cot.yaml``) as task `task` under `dest`,
    reading its rows from the JSON-lines `data_files` (split -> path)."""
    shipped = shipped_config(relpath)
    cfg = {k: v for k, v in shipped.items() if k != "dataset_name"}
    cfg.update(task=task, dataset_path="json", dataset_kwargs={"data_files": data_files})
    assert {k: v for k, v in cfg.items() if k not in CHANGED} == \
        {k: v for k, v in shipped.items() if k not in CHANGED}
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{task}.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return out


def write_rows(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def math_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """gsm8k-shaped rows (``question``, ``answer`` ending ``#### N``) the stub can solve."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        a, b = rng.randint(12, 60), rng.randint(2, 11)
        kind = i % 3
        if kind == 0:
            q = f"{name} has {a} {thing} and buys {b} more. How many {thing} does {name} have now?"
            v, why = a + b, f"{name} had {a} and bought {b}: {a} + {b} = {a + b}."
        elif kind == 1:
            q = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?"
            v, why = a - b, f"{name} had {a} and gave {b} away: {a} - {b} = {a - b}."
        else:
            q = (f"{name} buys {b} boxes of {thing} with {a} in each box. How many {thing} "
                 f"does {name} buy?")
            v, why = a * b, f"{b} boxes of {a} each: {b} * {a} = {a * b}."
        rows.append({"question": q, "answer": f"{why}\n#### {v}"})
    return rows


def choice_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """ARC-shaped rows (``question``, ``choices``, ``answerKey``) the stub can solve."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        wrong = rng.sample([x for x in range(4, 90) if x != a + b], 3)
        key = rng.randrange(4)
        options = wrong[:key] + [a + b] + wrong[key:]
        rows.append({"id": f"local-{seed}-{i}", "question": f"Which number equals {a} plus {b}?",
                     "choices": {"text": [str(o) for o in options], "label": list("ABCD")},
                     "answerKey": "ABCD"[key]})
    return rows


@dataclass
class Suite:
    """A copied task: its name, the folder for ``--include_path`` and its docs."""

    name: str
    include_path: Path
    docs: int


def make_suite(kind: str, tmp: Path, docs: int) -> Suite:
    """Copy one of the shipped task files used by the acceptance tests.

    `kind`: ``gsm8k``, ``gsm8k-cot``, ``gsm8k-cot-self-consistency`` or ``arc_challenge_chat``.
    """
    data = tmp / "data"
    if kind == "arc_challenge_chat":
        files = {split: write_rows(data / f"arc_{split}.jsonl", choice_rows(docs, seed))
                 for split, seed in (("train", 1), ("validation", 2), ("test", 3))}
        relpath = "arc/arc_challenge_chat.yaml"
    else:
        files = {"train": write_rows(data / "math_train.jsonl", math_rows(12, seed=1)),
                 "test": write_rows(data / "math_test.jsonl", math_rows(docs, seed=2))}
        relpath = f"gsm8k/{kind}.yaml"
    name = "local_" + kind.replace("-", "_")
    copy_task(relpath, tmp / "tasks", name, files)
    return Suite(name, tmp / "tasks", docs)


def lm_eval_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for an ``lm_eval`` subprocess: offline, datasets cached under `tmp`."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp / "hf-datasets"), "TOKENIZERS_PARALLELISM": "false",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOSTED_VLLM_API_KEY": "",
            "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root, **extra}


@dataclass
class Run:
    """One ``lm_eval`` invocation: exit code, output, results and logged samples."""

    returncode: int
    stdout: str
    stderr: str
    results: dict[str, Any] | None
    samples: dict[str, list[dict[str, Any]]]

    def scores(self, task: str) -> dict[str, float]:
        """``{"exact_match,strict-match": 1.0, ...}`` of `task` (stderr entries left out)."""
        assert self.results is not None, self.stderr[-3000:]
        row = self.results["results"][task]
        return {k: float(v) for k, v in row.items()
                if "," in k and "_stderr" not in k and isinstance(v, (int, float))}


def lm_eval(args: list[str], tmp: Path, name: str, timeout: float = 1200,
            env: dict[str, str] | None = None) -> Run:
    """Run ``lm_eval ARGS --output_path tmp/name --log_samples`` (the stock console script)."""
    out = tmp / name
    proc = subprocess.run([LM_EVAL_BIN, *args, "--output_path", str(out), "--log_samples"],
                          env=env or lm_eval_env(tmp), capture_output=True, text=True,
                          timeout=timeout, cwd=tmp)
    results = None
    found = sorted(out.rglob("results_*.json")) if out.exists() else []
    if found:
        results = json.loads(found[-1].read_text())
    samples: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(out.rglob("samples_*.jsonl")) if out.exists() else []:
        task = f.name.removeprefix("samples_").rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in f.read_text().splitlines() if line]
    return Run(proc.returncode, proc.stdout, proc.stderr, results, samples)
