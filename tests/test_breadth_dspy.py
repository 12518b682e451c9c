"""Breadth suite (issue 22), DSPy: programs compiled by DSPy's optimizers, plain and as
``dspy.RSA``, against the format stub through a real ``dspy.LM`` (DSPy's adapters, parsing,
typed outputs; the stub answers in the ChatAdapter's or JSONAdapter's format).

Each optimizer compiles the plain program (``ChainOfThought``) and the RSA one from the same
trainset; then both run on a devset under the same metric.  Checked: the same score (all
right), N x T LM calls per example for RSA (one for plain), every request served.  MIPROv2
runs too: DSPy's ``optuna`` extra comes with ``rsa-plugins[dspy]``.
"""

from __future__ import annotations

from typing import Any

import pytest

from format_stub import FormatStub
from task_suites import math_rows

dspy = pytest.importorskip("dspy")

N, K, T = 2, 2, 2
TABLE: list[str] = []


def examples(n: int, seed: int) -> list[Any]:
    return [dspy.Example(question=r["question"], answer=int(r["answer"].split("####")[1]))
            .with_inputs("question") for r in math_rows(n, seed)]


def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None,
           pred_trace: Any = None) -> float:
    try:
        return float(int(pred.answer) == int(gold.answer))
    except (TypeError, ValueError):
        return 0.0


class Solve(dspy.Signature):
    """Solve the word problem."""

    question: str = dspy.InputField()
    answer: int = dspy.OutputField(desc="the number asked for")


def optimizers(lm: Any) -> dict[str, Any]:
    return {
        "BootstrapFewShot": lambda: dspy.BootstrapFewShot(
            metric=metric, max_bootstrapped_demos=1, max_labeled_demos=1),
        "RandomSearch": lambda: dspy.BootstrapFewShotWithRandomSearch(
            metric=metric, max_bootstrapped_demos=1, max_labeled_demos=1,
            num_candidate_programs=1, num_threads=1),
        "GEPA": lambda: dspy.GEPA(metric=metric, max_metric_calls=6, reflection_lm=lm,
                                  reflection_minibatch_size=1, num_threads=1,
                                  track_stats=False),
        "MIPROv2": lambda: dspy.MIPROv2(metric=metric, auto=None, num_candidates=2,
                                        num_threads=1, verbose=False),
    }


@pytest.fixture(scope="module")
def stub():
    with FormatStub() as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    if TABLE:
        print("\n| DSPy optimizer | adapter | plain | RSA | calls per example (plain / RSA) |\n"
              "|---|---|---|---|---|\n" + "\n".join(TABLE))


def compile_and_evaluate(name: str, program: Any, stub: FormatStub, lm: Any) -> tuple[float, int]:
    train, dev = examples(3, 1), examples(2, 2)
    optimizer = optimizers(lm)[name]()
    kwargs: dict[str, Any] = {"trainset": train}
    if name == "GEPA":
        kwargs["valset"] = train[:2]
    if name == "MIPROv2":
        kwargs.update(valset=train[:2], num_trials=2, minibatch=False,
                      max_bootstrapped_demos=1, max_labeled_demos=1)
    compiled = optimizer.compile(program, **kwargs)
    stub.reset()
    score = dspy.Evaluate(devset=dev, metric=metric, num_threads=1, display_progress=False,
                          provide_traceback=True)(compiled)
    log = stub.log()
    assert all(e["status"] == 200 for e in log), [e for e in log if e["status"] != 200][:1]
    return float(getattr(score, "score", score)), len(log) // len(dev)


@pytest.mark.parametrize("name, adapter", [
    ("BootstrapFewShot", "chat"), ("BootstrapFewShot", "json"), ("RandomSearch", "chat"),
    ("RandomSearch", "json"), ("GEPA", "chat"), ("MIPROv2", "chat")])
def test_optimized_rsa_scores_like_the_optimized_program(name, adapter, stub):
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM(f"openai/{stub.model}", api_base=stub.base_url, api_key="stub-key",
                 num_retries=0, cache=False)
    chosen = dspy.JSONAdapter() if adapter == "json" else dspy.ChatAdapter()
    with dspy.context(lm=lm, adapter=chosen):
        plain, plain_calls = compile_and_evaluate(name, dspy.ChainOfThought(Solve), stub, lm)
        rsa, rsa_calls = compile_and_evaluate(
            name, dspy.RSA(Solve, population=N, aggregation_size=K, steps=T), stub, lm)
    TABLE.append(f"| {name} | {adapter} | {plain} | {rsa} | {plain_calls} / {rsa_calls} |")
    assert plain == 100.0 or plain == 1.0, plain
    assert rsa == plain
    assert (plain_calls, rsa_calls) == (1, N * T)
