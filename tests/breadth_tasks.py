"""lm-eval's shipped task files for the breadth suite, pointed at local rows `stub_model` solves.

`copy_task` reads a task YAML from the installed lm-eval at test time, resolves its ``include:``
as lm-eval does, keeps its ``!function`` references (and copies the task folder's Python files
beside the copy, where they resolve), and changes only where the data comes from, the task name
and ``dataset_name``.  Nothing of lm-eval's is committed.

`ROWS` makes each task's rows; `write_code_eval` writes a local stand-in for the hub's
``code_eval`` metric (no hub here), which humaneval's and mbpp's own ``pass_at_k`` load by name
from the working directory: it runs each program with its tests in a subprocess.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from task_suites import choice_rows, lm_eval_tasks_dir, math_rows

CHANGED = {"task", "dataset_path", "dataset_kwargs", "dataset_name"}


class Function(str):
    """A ``!function module.name`` reference, kept as written."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!function", lambda loader, node: Function(loader.construct_scalar(node)))
_Dumper.add_representer(Function, lambda dumper, f: dumper.represent_scalar("!function", str(f)))


def shipped(relpath: str) -> dict[str, Any]:
    """A shipped task YAML with its ``include:`` resolved (the including file wins)."""
    path = lm_eval_tasks_dir() / relpath
    cfg = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader + one tag
    include = cfg.pop("include", None)
    if include is None:
        return cfg
    merged: dict[str, Any] = {}
    for inc in [include] if isinstance(include, str) else include:
        merged.update(shipped(str((path.parent / inc).relative_to(lm_eval_tasks_dir()))))
    return {**merged, **cfg}


def copy_task(relpath: str, dest: Path, task: str, data_files: dict[str, str]) -> dict[str, Any]:
    """Write lm-eval's `relpath` as task `task` in its own folder under `dest` (with the Python
    files of the shipped folder), reading rows from `data_files`; returns the copied config."""
    original = shipped(relpath)
    cfg = {k: v for k, v in original.items() if k not in ("dataset_name", "tag", "group")}
    cfg.update(task=task, dataset_path="json", dataset_kwargs={"data_files": data_files})
    assert {k: v for k, v in cfg.items() if k not in CHANGED} == \
        {k: v for k, v in original.items() if k not in CHANGED | {"tag", "group"}}
    folder = dest / task
    folder.mkdir(parents=True, exist_ok=True)
    for py in (lm_eval_tasks_dir() / relpath).parent.glob("*.py"):
        shutil.copy(py, folder / py.name)
    (folder / f"{task}.yaml").write_text(yaml.dump(cfg, Dumper=_Dumper, sort_keys=False,
                                                   allow_unicode=True))
    return cfg


def _sum_question(i: int) -> tuple[int, int]:
    return 3 + i, 4 + 2 * i


def qa_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"question": f"what is {a} plus {b}", "answer": [str(a + b)]}
            for a, b in (_sum_question(i + seed) for i in range(n))]


def trivia_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"question": f"What is {a} plus {b}", "question_id": f"q{seed}-{i}",
             "answer": {"aliases": [str(a + b)], "normalized_aliases": [str(a + b)],
                        "value": str(a + b), "normalized_value": str(a + b)}}
            for i, (a, b) in enumerate(_sum_question(i + seed) for i in range(n))]


def minerva_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"problem": r["question"], "level": "Level 1", "type": "Algebra",
             "solution": r["answer"].split("####")[0].strip() + " The answer is $\\boxed{"
             + r["answer"].split("####")[1].strip() + "}$."} for r in math_rows(n, seed)]


def bbh_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"input": r["question"], "target": r["answer"].split("####")[1].strip()}
            for r in math_rows(n, seed)]


def mmlu_pro_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for i, r in enumerate(choice_rows(n, seed)):
        options = r["choices"]["text"] + [str(90 + j) for j in range(6)]
        letter = r["answerKey"]
        rows.append({"question_id": i, "question": r["question"], "options": options,
                     "answer": letter, "answer_index": "ABCD".index(letter),
                     "cot_content": f"A: Let's think step by step. The sum is "
                                    f"{options['ABCD'.index(letter)]}, which is option "
                                    f"{letter}. The answer is ({letter}).",
                     "category": "math", "src": "local"})
    return rows


IFEVAL = ("Write a short note to the team confirming that the review moves to Friday. Your "
          "entire response should be in English, and in all lowercase letters. Do not use any "
          "commas in your response.")


def ifeval_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"key": seed * 100 + i, "prompt": IFEVAL,
             "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"],
             "kwargs": [{"num_words": None}, {"num_words": None}]} for i in range(n)]


def humaneval_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        a, b = _sum_question(i + seed)
        name = f"sum_{a}_{b}"
        rows.append({"task_id": f"local/{seed}-{i}", "entry_point": name,
                     "prompt": f'def {name}():\n    """Return the sum of {a} and {b}."""\n',
                     "canonical_solution": f"    return {a + b}\n",
                     "test": f"def check(candidate):\n    assert candidate() == {a + b}\n"})
    return rows


def mbpp_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        a, b = _sum_question(i + seed)
        name = f"sum_{a}_{b}"
        rows.append({"task_id": 900 + seed * 10 + i, "text": f"Write a function to return "
                     f"the sum of {a} and {b}.", "code": f"def {name}():\n    return {a + b}",
                     "test_list": [f"assert {name}() == {a + b}", f"assert {name}() - {a} == {b}",
                                   f"assert isinstance({name}(), int)"],
                     "test_setup_code": "", "challenge_test_list": []})
    return rows


def gsm8k_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return math_rows(n, seed)


def aime_rows(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"id": i, "problem": r["question"], "answer": r["answer"].split("####")[1].strip()}
            for i, r in enumerate(math_rows(n, seed))]


ROWS: dict[str, Callable[[int, int], list[dict[str, Any]]]] = {
    "math": gsm8k_rows, "minerva": minerva_rows, "bbh": bbh_rows, "mmlu_pro": mmlu_pro_rows,
    "qa": qa_rows, "trivia": trivia_rows, "ifeval": ifeval_rows, "humaneval": humaneval_rows,
    "mbpp": mbpp_rows, "aime": aime_rows,
}


def make_task(relpath: str, rows: str, tmp: Path, name: str, docs: int) -> None:
    """Copy `relpath` as task `name` with `docs` test rows (and rows for every other split)."""
    data = tmp / "data" / name
    data.mkdir(parents=True, exist_ok=True)
    cfg = shipped(relpath)
    evaluated = cfg.get("test_split") or cfg.get("validation_split")
    files = {}
    for split, seed in (("train", 1), ("validation", 2), ("test", 3)):
        n = docs if split == evaluated else 6
        path = data / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[rows](n, seed)))
        files[split] = str(path)
    copy_task(relpath, tmp / "tasks", name, files)


CODE_EVAL = '''"""A local stand-in for the hub's code_eval metric: each program runs with its tests."""
import math
import subprocess
import sys

import datasets
import evaluate


def passes(program):
    try:
        return subprocess.run([sys.executable, "-c", program], capture_output=True,
                              timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def pass_at(n, c, k):
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


class CodeEval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="pass@k", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, k=(1,)):
        results = {i: [passes(p + "\\n" + ref) for p in preds]
                   for i, (preds, ref) in enumerate(zip(predictions, references))}
        scores = {f"pass@{x}": sum(pass_at(len(r), sum(r), x) for r in results.values())
                  / len(results) for x in k}
        return scores, results
'''


def write_code_eval(folder: Path) -> None:
    """``code_eval/code_eval.py`` under `folder` (the working directory of the run)."""
    (folder / "code_eval").mkdir(parents=True, exist_ok=True)
    (folder / "code_eval" / "code_eval.py").write_text(CODE_EVAL)
