"""Stop strings past four (issue 22, item 5): every ``until`` string reaches servers that take
them all; where a provider caps them, what was really sent is recorded."""

from __future__ import annotations

import asyncio
import json

import pytest

from format_stub import FormatStub
from rsa_plugins.engines.litellm import LiteLLMEngine
from rsa_plugins.types import Request

#: lm-eval's humaneval / gsm8k_cot_llama stop at five strings
UNTIL = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


@pytest.fixture(scope="module")
def stub():
    with FormatStub() as server:
        yield server


def sent_stops(stub: FormatStub, transport: str) -> tuple[list[str], LiteLLMEngine]:
    stub.reset()
    engine = LiteLLMEngine(f"hosted_vllm/{stub.model}", api_base=stub.base_url,
                           transport=transport, max_retries=0)
    request = Request(messages=[{"role": "user", "content": "Tom has 3 apples and buys 4 more."}],
                      seed=1, stop=UNTIL, max_tokens=64)

    async def go() -> None:
        try:
            [[comp]] = await engine.generate([request])
            assert comp.ok, comp.error
        finally:
            await engine.aclose()

    asyncio.run(go())
    [entry] = stub.log()
    return entry["body"]["stop"], engine


def test_a_vllm_server_gets_every_stop_string(stub):
    sent, engine = sent_stops(stub, "http")
    assert sent == UNTIL
    assert engine.max_stop is None and engine.stop_sent(UNTIL) == UNTIL
    assert engine.describe()["max_stop"] is None


def test_through_litellm_the_cap_is_what_the_engine_says_it_sends(stub):
    sent, engine = sent_stops(stub, "litellm")
    assert sent == engine.stop_sent(UNTIL) == UNTIL[:4]
    assert engine.describe()["max_stop"] == 4


def test_openais_own_api_is_capped_even_over_http():
    engine = LiteLLMEngine("openai/gpt-4o-mini", api_base="https://api.openai.com/v1",
                           api_key="sk-test", transport="http")
    assert engine.stop_sent(UNTIL) == UNTIL[:4]


def test_lm_eval_records_what_was_sent_in_results_and_trace(stub, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from task_suites import copy_task, math_rows, write_rows

    data = {"train": write_rows(tmp_path / "train.jsonl", math_rows(4, 1)),
            "test": write_rows(tmp_path / "test.jsonl", math_rows(1, 2))}
    copy_task("gsm8k/gsm8k-cot-llama.yaml", tmp_path / "tasks", "local_cot_llama", data)
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    for transport, expected in (("litellm", UNTIL_LLAMA[:4]), ("http", UNTIL_LLAMA)):
        stub.reset()
        trace = tmp_path / f"{transport}.jsonl"
        results = lm_eval.simple_evaluate(
            model="rsa-litellm", tasks=["local_cot_llama"], task_manager=manager,
            model_args={"model": f"hosted_vllm/{stub.model}", "api_base": stub.base_url,
                        "transport": transport, "population": 2, "aggregation_size": 2,
                        "steps": 1, "trace": str(trace)},
            apply_chat_template=True, fewshot_as_multiturn=True, bootstrap_iters=0, limit=1)
        [run] = results["config"]["rsa"]["runs"]
        assert list(run["config"]["stop"]) == UNTIL_LLAMA  # what the task asked for
        assert run["stop_sent"] == expected  # what the requests carried
        assert all(e["body"]["stop"] == expected for e in stub.log())
        [header] = [json.loads(line) for line in
                    next(tmp_path.glob(f"{transport}.*.jsonl")).read_text().splitlines()[:1]]
        assert header["stop_sent"] == expected, header


#: gsm8k_cot_llama's until, as shipped
UNTIL_LLAMA = ["<|eot_id|>", "<|start_header_id|>user<|end_header_id|>", "Q:", "</s>",
               "<|im_end|>"]


@pytest.mark.parametrize("prompt, until, kept", [
    ("Q: How many fruits?\nA: Let's think step by step.", ["</s>", "Q", "\n\n"], ["</s>"]),
    ("Problem:\nFind x.\n\nSolution:", ["Problem:"], []),
    ("Question: Which gas?\nAnswer:", ["Question:", "</s>", "<|im_end|>"], ["</s>", "<|im_end|>"]),
    ("Q: who wrote it?\nA:", ["\n", ".", ","], ["\n", ".", ","]),
    ('def f():\n    """Return 7."""\n', ["\nclass", "\ndef", "\n#", "\nif", "\nprint"],
     ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]),
])
def test_aggregation_keeps_the_stops_that_do_not_cut_replies_before_their_answer(prompt, until,
                                                                                  kept):
    """Measured on the embedded model (benchmarks/test_stop_strings_real.py): stops that open
    the problem's own text and blank lines cut aggregated replies before their answer."""
    from rsa_plugins.prompts import aggregation_stop
    from rsa_plugins.types import Problem

    assert aggregation_stop(until, Problem(prompt)) == kept
