"""``rsa/<model>`` in-process: ``litellm.completion`` / ``acompletion`` / streaming, ``dspy.LM``,
the chat as a problem, n > 1, tools, and bad settings; against the scripted lineage stub."""

from __future__ import annotations

import os
import subprocess
import sys

import litellm
import pytest

from lineage_stub import LineageStub, check_lineage, usage_sum
from openai_stub import StubServer
from rsa_plugins.adapters.litellm import PROVIDER, register
from rsa_plugins.adapters.litellm.request import chat_problem

KEY = "sk-stub-in-process-0000"
SMALL = {"population": 4, "aggregation_size": 3, "steps": 3}
QUESTION = [{"role": "user", "content": "What is 6 * 7? Put the answer in \\boxed{}."}]


@pytest.fixture(scope="module")
def stub():
    with LineageStub(key=KEY) as s:
        yield s


def call(stub: LineageStub, name: str, **kwargs):
    kwargs.setdefault("messages", QUESTION)
    kwargs.setdefault("rsa", SMALL)
    return litellm.completion(model=f"rsa/openai/{name}", api_base=stub.base_url, api_key=KEY,
                              **kwargs)


def test_the_start_up_hook_registers_the_provider_when_litellm_is_imported():
    code = "import litellm; print([p['provider'] for p in litellm.custom_provider_map])"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.stdout.strip() == "['rsa']", out.stderr[-2000:]
    register(litellm)  # again: still one entry
    assert [p["provider"] for p in litellm.custom_provider_map].count(PROVIDER) == 1


def test_completion_runs_rsa_with_exact_lineage_and_summed_usage(stub):
    r = call(stub, "sync", temperature=0.6, max_tokens=40, top_k=5, seed=3)
    log = stub.log("sync")
    check_lineage(log, n=4, k=3, t=3)
    assert all(e["temperature"] == 0.6 and e["max_tokens"] == 40 and e["top_k"] == 5
               for e in log)  # the call's options reach every inner call
    assert len({e["seed"] for e in log}) == len(log)  # distinct seeds
    served = usage_sum(log)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (
        served["prompt_tokens"], served["completion_tokens"])
    assert r.usage.completion_tokens_details.reasoning_tokens == served["reasoning_tokens"]
    fields = r.choices[0].message.provider_specific_fields["rsa"]
    assert fields["config"]["seed"] == 3 and len(fields["steps"]) == 3
    assert [m["distinct_answers"] for m in fields["steps"]] and fields["votes"]
    assert r.choices[0].message.content == fields["population"][fields["chosen"]]["text"]


def test_a_seed_makes_the_run_repeatable_and_its_absence_a_fresh_draw(stub):
    def seeds(name: str, **kwargs) -> list[int]:
        call(stub, name, **kwargs)
        return [e["seed"] for e in stub.log(name)]

    assert seeds("seeded-a", seed=3) == seeds("seeded-b", seed=3)
    assert seeds("fresh-a") != seeds("fresh-b")


async def test_acompletion_and_streaming(stub):
    r = await litellm.acompletion(model="rsa/openai/async", messages=QUESTION, rsa=SMALL,
                                  api_base=stub.base_url, api_key=KEY)
    check_lineage(stub.log("async"), n=4, k=3, t=3)
    assert "cand-" in r.choices[0].message.content
    chunks = list(call(stub, "stream", stream=True, stream_options={"include_usage": True}))
    progress = [c for c in chunks if c.choices and
                (c.choices[0].delta.provider_specific_fields or {}).get("rsa_progress")]
    assert len(progress) == 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "cand-" in text
    served = usage_sum(stub.log("stream"))
    usage = [c.usage for c in chunks if getattr(c, "usage", None)][-1]
    assert usage.prompt_tokens == served["prompt_tokens"]


def test_the_chat_becomes_the_problem_and_every_call_keeps_it(stub):
    chat = [{"role": "system", "content": "Answer tersely."},
            {"role": "user", "content": "What is 1 + 1?"},
            {"role": "assistant", "content": "\\boxed{2}"},
            {"role": "user", "content": [{"type": "text", "text": "What is 6 * 7?"}]},
            {"role": "assistant", "content": "Let me see."}]
    problem, why = chat_problem(chat)
    assert why is None and problem.prompt == "What is 6 * 7?"
    assert problem.system == "Answer tersely." and problem.prefill == "Let me see."
    assert problem.fewshot == chat[1:3]
    call(stub, "chat", messages=chat)
    log = stub.log("chat")
    check_lineage(log, n=4, k=3, t=3)
    for e in log:
        assert e["messages"][:3] == chat[:3]  # system and few-shot turns
        assert e["messages"][-1] == {"role": "assistant", "content": "Let me see."}  # prefill
    assert all("What is 6 * 7?" in e["messages"][3]["content"] for e in log)


def test_n_returns_the_largest_clusters_representatives(stub):
    r = call(stub, "many", n=2, rsa={"population": 6, "aggregation_size": 2, "steps": 2})
    fields = r.choices[0].message.provider_specific_fields["rsa"]
    answers = [c.message.provider_specific_fields["rsa"]["answer"] for c in r.choices]
    assert len(r.choices) == 2
    ranked = sorted(fields["votes"], key=fields["votes"].get, reverse=True)
    assert answers[0] == fields["answer"] == ranked[0]
    assert answers[1] == (ranked[1] if len(ranked) > 1 else ranked[0])
    with pytest.raises(litellm.BadRequestError, match="n must be between 1 and 6"):
        call(stub, "many", n=7, rsa={"population": 6, "aggregation_size": 2, "steps": 2})
    with pytest.raises(litellm.BadRequestError, match="n > 1 needs stream=False"):
        list(call(stub, "many", n=2, stream=True))


def test_tools_pass_through_unchanged_and_the_response_says_so(stub):
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]
    r = call(stub, "tools", tools=tools)
    log = stub.log("tools")
    assert len(log) == 1 and "tools" in log[0]["keys"] and log[0]["messages"] == QUESTION
    fields = r.choices[0].message.provider_specific_fields["rsa"]
    assert fields["applied"] is False and "tools" in fields["reason"]
    first = next(iter(call(stub, "tools-stream", tools=tools, stream=True)))
    assert first.choices[0].delta.provider_specific_fields["rsa"]["applied"] is False
    assert len(stub.log("tools-stream")) == 1 and "tools" in stub.log("tools-stream")[0]["keys"]


def test_the_response_costs_every_call_at_the_inner_models_price(stub):
    r = call(stub, "gpt-4o-mini", rsa={"population": 2, "aggregation_size": 2, "steps": 2})
    served = usage_sum(stub.log("gpt-4o-mini"))
    price = litellm.cost_per_token(model="openai/gpt-4o-mini",
                                   prompt_tokens=served["prompt_tokens"],
                                   completion_tokens=served["completion_tokens"])
    assert r._hidden_params["response_cost"] == pytest.approx(sum(price))


def test_extra_body_rsa_overrides_the_rsa_argument_key_by_key(stub):
    call(stub, "extra", extra_body={"rsa": {"steps": 2}, "top_k": 7})
    log = stub.log("extra")
    check_lineage(log, n=4, k=3, t=2)  # N and K from rsa=, T from extra_body
    assert {e["top_k"] for e in log} == {7}  # the rest of extra_body reaches every call


def test_greedy_requests_are_sampled_unless_rsa_says_so(stub):
    call(stub, "greedy", temperature=0)
    assert {e["temperature"] for e in stub.log("greedy")} == {1.0}
    call(stub, "greedy0", temperature=0.5, rsa={**SMALL, "temperature": 0})
    assert {e["temperature"] for e in stub.log("greedy0")} == {0}


@pytest.mark.parametrize("rsa, message", [
    ({"populaton": 4}, r"unknown rsa option 'populaton' \(did you mean 'population'\?\)"),
    ({"population": 2, "aggregation_size": 3}, "aggregation_size must be between 1 and population"),
    ("population=4", "rsa must be a mapping"),
])
def test_bad_settings_are_refused_in_one_line_before_any_call(stub, rsa, message):
    with pytest.raises(litellm.BadRequestError, match=message):
        call(stub, "bad", rsa=rsa)
    assert stub.log("bad") == []


def test_a_run_whose_every_call_fails_is_a_503_with_the_first_error():
    with StubServer(faults={"400": 1.0}) as failing:
        with pytest.raises(litellm.ServiceUnavailableError,
                           match=r"every call to openai/stub failed \(.*400"):
            litellm.completion(model="rsa/openai/stub", messages=QUESTION, rsa=SMALL,
                               api_base=failing.base_url, api_key=KEY)
        assert len(failing.stats()) == 1  # the first step's one request (n=4), refused


def test_a_dspy_program_on_an_rsa_model(stub):
    dspy = pytest.importorskip("dspy")
    lm = dspy.LM("rsa/openai/dspy", api_base=stub.base_url, api_key=KEY, cache=False,
                 rsa={"population": 3, "aggregation_size": 2, "steps": 2})
    with dspy.context(lm=lm):
        pred = dspy.Predict("question -> answer")(question="What is 6 * 7?")
    assert pred.answer in ("42", "7")
    check_lineage(stub.log("dspy"), n=3, k=2, t=2)
