"""Breadth suite (issue 22), Inspect: five inspect_evals tasks as they ship -- their own dataset
records -> samples, solver chains and scorers -- run plain and with ``--solver rsa``.

Only where the data comes from changes: inspect_evals' hub loaders (``hf_dataset``, GPQA's CSV
download) return local records that `stub_model` solves, through each task's own
``record_to_sample``.  The stub writes numeric answers inline ("..., so ANSWER: 7"), as models
often do.  Checked: the task's scorer gives RSA the plain run's score (all right), N x T calls
per sample, every request served, and RSA's own vote saw every candidate's answer (one answer,
N votes).
"""

from __future__ import annotations

from typing import Any

import pytest

from format_stub import FormatStub
from task_suites import choice_rows, math_rows

inspect_evals = pytest.importorskip("inspect_evals")

N, K, T, DOCS = 2, 2, 2, 2
TABLE: list[str] = []


def _mc(i: int) -> dict[str, Any]:
    a, b = 3 + i, 4 + 2 * i
    options = [str(a + b - 1), str(a + b), str(a + b + 5), str(a + b + 9)]
    return {"question": f"Which number equals {a} plus {b}?", "choices": options, "answer": 1,
            "subject": "elementary_mathematics"}


def records(path: str, split: str) -> list[dict[str, Any]]:
    """Local records shaped like each hub dataset inspect_evals loads."""
    if path == "openai/gsm8k":
        return math_rows(6 if split == "train" else DOCS, 1 if split == "train" else 2)
    if path == "math-ai/aime25":
        return [{"id": f"aime-{i}", "problem": r["question"],
                 "answer": r["answer"].split("####")[1].strip()}
                for i, r in enumerate(math_rows(DOCS, 3))]
    if path == "cais/mmlu":
        return [_mc(i + (10 if split == "dev" else 0)) for i in range(3 if split == "dev" else DOCS)]
    if path == "allenai/ai2_arc":
        return choice_rows(DOCS, 4)
    raise AssertionError(f"no local records for {path} {split}")


def fake_hf_dataset(path: str, split: str, sample_fields: Any, limit: int | None = None,
                    **_: Any) -> Any:
    from inspect_ai.dataset import MemoryDataset

    samples = [sample_fields(r) for r in records(path, split)]
    return MemoryDataset(samples[:limit] if limit else samples, name=f"{path}-{split}")


def fake_gpqa_csv(file_path: str, sample_fields: Any, shuffle_choices: Any = False,
                  **_: Any) -> Any:
    from inspect_ai.dataset import MemoryDataset

    rows = []
    for i in range(DOCS):
        mc = _mc(i + 20)
        right = mc["choices"][1]
        wrong = [c for c in mc["choices"] if c != right]
        rows.append({"Question": mc["question"], "Correct Answer": right,
                     **{f"Incorrect Answer {j + 1}": w for j, w in enumerate(wrong)},
                     "Record ID": f"gpqa-{i}", "High-level domain": "Physics",
                     "Subdomain": "Physics (general)"})
    dataset = MemoryDataset([sample_fields(r) for r in rows])
    if shuffle_choices is not False:
        dataset.shuffle_choices(seed=None if shuffle_choices is True else shuffle_choices)
    return dataset


def tasks() -> dict[str, Any]:
    from inspect_evals.aime2025 import aime2025
    from inspect_evals.arc import arc_easy
    from inspect_evals.gpqa import gpqa_diamond
    from inspect_evals.gsm8k import gsm8k
    from inspect_evals.mmlu import mmlu_5_shot

    return {"gsm8k": lambda: gsm8k(fewshot=3), "gpqa_diamond": gpqa_diamond,
            "mmlu_5_shot": mmlu_5_shot, "aime2025": aime2025, "arc_easy": arc_easy}


@pytest.fixture(scope="module")
def stub():
    with FormatStub() as server:
        yield server


@pytest.fixture(autouse=True)
def local_data(stub, monkeypatch):
    import inspect_ai.dataset
    import inspect_evals.gpqa.gpqa as gpqa

    monkeypatch.setattr(inspect_ai.dataset, "hf_dataset", fake_hf_dataset)
    monkeypatch.setattr(gpqa, "download", lambda *a, **k: None)
    monkeypatch.setattr(gpqa, "load_csv_dataset", fake_gpqa_csv)
    monkeypatch.setenv("STUB_BASE_URL", stub.base_url)
    monkeypatch.setenv("STUB_API_KEY", "stub-key")


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    if TABLE:
        print("\n| inspect_evals task | plain | RSA | calls (plain / RSA) |\n|---|---|---|---|\n"
              + "\n".join(TABLE))


def evaluate(stub: FormatStub, tmp, make: Any, rsa: bool) -> tuple[Any, list[dict[str, Any]]]:
    from inspect_ai import eval as inspect_eval
    from inspect_ai.solver import SolverSpec

    stub.reset()
    args = {"population": N, "aggregation_size": K, "steps": T}
    solver = SolverSpec("rsa_plugins/rsa", dict(args), dict(args)) if rsa else None
    [log] = inspect_eval(make(), model="openai-api/stub/stub", model_base_url=stub.base_url,
                         solver=solver, log_dir=str(tmp / "logs"), display="none", max_retries=0, epochs=1)
    assert log.status == "success", log.error
    return log, stub.log()


def accuracy(log: Any) -> float:
    return float(log.results.scores[0].metrics["accuracy"].value)


@pytest.mark.parametrize("name", ["gsm8k", "gpqa_diamond", "mmlu_5_shot", "aime2025",
                                  "arc_easy"])
def test_inspect_evals_task_scores_the_same_with_rsa(name, stub, tmp_path):
    make = tasks()[name]
    plain, plain_log = evaluate(stub, tmp_path, make, rsa=False)
    rsa, rsa_log = evaluate(stub, tmp_path, make, rsa=True)
    TABLE.append(f"| {name} | {accuracy(plain)} | {accuracy(rsa)} | "
                 f"{len(plain_log)} / {len(rsa_log)} |")
    assert accuracy(plain) == 1.0, [s.output.completion for s in plain.samples]
    assert accuracy(rsa) == accuracy(plain), [s.output.completion for s in rsa.samples]
    assert len(rsa_log) == DOCS * N * T
    assert all(e["status"] == 200 for e in rsa_log + plain_log)
    for sample in rsa.samples:
        votes = next(v for k, v in sample.store.items() if k.endswith("votes"))
        assert votes == {str(sample.target): N}, votes  # every candidate's answer was read
