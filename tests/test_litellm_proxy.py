"""``rsa/<model>`` served by LiteLLM's real proxy process, called with the stock ``openai`` client.

One proxy (``litellm --config``, no mock) in front of the scripted lineage stub: the start-up
hook registers the provider in the proxy process, each test uses its own model entry.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("backoff")  # a proxy dependency litellm itself does not install

from lineage_stub import LineageStub, check_lineage, usage_sum  # noqa: E402
from litellm_proxy import LiteLLMProxy  # noqa: E402

STUB_KEY = "sk-stub-right-key-000000"
DOC = Path(__file__).resolve().parents[1] / "docs" / "litellm.md"
QUESTION = [{"role": "system", "content": "You are careful."},
            {"role": "user", "content": "What is 6 * 7? Put the answer in \\boxed{}."}]


def entry(name: str, inner: str, rsa: dict, stub: LineageStub | None, key: bool = True,
          **params: object) -> dict:
    litellm_params = {"model": f"rsa/{inner}", "rsa": rsa, **params}
    if stub is not None:
        litellm_params["api_base"] = stub.base_url
    if key:
        litellm_params["api_key"] = STUB_KEY
    return {"model_name": name, "litellm_params": litellm_params}


def doc_config(stub: LineageStub) -> dict:
    """The proxy config of docs/litellm.md, its model entry pointed at the stub."""
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S).group(1))
    for item in config["model_list"]:
        item["litellm_params"].update(api_base=stub.base_url, api_key=STUB_KEY)
    return config


@pytest.fixture(scope="module")
def served():
    with LineageStub(key=STUB_KEY) as stub:
        doc = doc_config(stub)
        small = {"population": 4, "aggregation_size": 2, "steps": 3}
        config = {
            "model_list": [
                *doc["model_list"],
                entry("rsa-lineage", "openai/lineage", small, stub),
                entry("rsa-override", "openai/override", {**small, "aggregation_size": 3}, stub),
                # each call waits 1 s; the whole run takes longer than the per-call timeout
                entry("rsa-stream", "openai/stream@1",
                      {"population": 2, "aggregation_size": 2, "steps": 5}, stub, timeout=4),
                entry("rsa-priced", "openai/gpt-4o-mini-2024-07-18", {**small, "steps": 2}, stub),
                entry("rsa-slow", "openai/slow@3", small, stub),
                entry("rsa-slow-stream", "openai/slowstream@3", small, stub),
                # no api_key: the proxy's (wrong) OPENAI_API_KEY is used.  The router cools a
                # deployment down after a 401, so the streaming case has entries of its own.
                *(entry(f"rsa-wrong-key{s}", f"openai/wrongkey{s}", small, stub, key=False)
                  for s in ("", "-stream")),
                *(entry(f"rsa-no-key{s}", "anthropic/claude-3-5-haiku-20241022", small, None,
                        key=False) for s in ("", "-stream")),
            ],
            "general_settings": doc["general_settings"],  # cancel_on_disconnect
        }
        env = {"OPENAI_API_KEY": "sk-wrong-key-111111111", "ANTHROPIC_API_KEY": None}
        with LiteLLMProxy(config, env) as proxy:
            yield stub, proxy


def client(proxy: LiteLLMProxy, cls=None):
    return (cls or openai.OpenAI)(base_url=proxy.base_url, api_key=proxy.key, max_retries=0,
                                  timeout=120)


def rsa_fields(message) -> dict:
    return (message.model_extra or {})["provider_specific_fields"]["rsa"]


def test_lineage_usage_and_fields_through_the_proxy(served):
    stub, proxy = served
    r = client(proxy).chat.completions.create(model="rsa-lineage", messages=QUESTION,
                                              temperature=0.7, max_tokens=50)
    log = stub.log("lineage")
    check_lineage(log, n=4, k=2, t=3)
    assert len(log) == 1 + 4 * 2  # the first step in one request with n=4
    served_usage = usage_sum(log)
    assert r.usage.prompt_tokens == served_usage["prompt_tokens"]
    assert r.usage.completion_tokens == served_usage["completion_tokens"]
    assert r.usage.completion_tokens_details.reasoning_tokens == served_usage["reasoning_tokens"]
    assert all(e["temperature"] == 0.7 and e["max_tokens"] == 50 for e in log)
    assert all(e["messages"][0] == QUESTION[0] for e in log)  # the system message, every call
    fields = rsa_fields(r.choices[0].message)
    assert fields["applied"] and fields["generations"] == 4 * 3
    assert len(fields["population"]) == 4 and len(fields["steps"]) == 3
    chosen = fields["population"][fields["chosen"]]
    assert r.choices[0].message.content == chosen["text"]
    assert fields["votes"][str(chosen["answer"])] == max(fields["votes"].values())


def test_extra_body_overrides_the_model_entry_key_by_key(served):
    stub, proxy = served
    c = client(proxy)
    c.chat.completions.create(model="rsa-override", messages=QUESTION,
                              extra_body={"rsa": {"steps": 2, "aggregation_size": 2}})
    check_lineage(stub.log("override"), n=4, k=2, t=2)  # population 4 from the model entry
    with pytest.raises(openai.BadRequestError, match=r"did you mean 'population'"):
        c.chat.completions.create(model="rsa-override", messages=QUESTION,
                                  extra_body={"rsa": {"populaton": 2}})
    assert len(stub.log("override")) == 1 + 4  # the refused request made no call


def test_streaming_sends_progress_then_the_answer_and_outlives_the_call_timeout(served):
    stub, proxy = served
    stream = client(proxy).chat.completions.create(
        model="rsa-stream", messages=QUESTION, stream=True,
        stream_options={"include_usage": True})
    progress, text, usage, finish, record = [], "", None, None, None
    for chunk in stream:
        extra = chunk.model_extra or {}
        if "rsa_progress" in extra:
            progress.append(extra["rsa_progress"])
        record = extra.get("rsa") or record
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    log = stub.log("stream@1")
    check_lineage(log, n=2, k=2, t=5)  # 5 calls of 1 s in a row: longer than timeout=4
    assert [p["step"] for p in progress if "distinct_answers" in p] == [1, 2, 3, 4, 5]
    assert progress[-1]["generations"] == progress[-1]["total"] == 10
    assert "cand-" in text and finish == "stop"
    assert record["applied"] and record["generations"] == 10 and len(record["steps"]) == 5
    served_usage = usage_sum(log)
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        served_usage["prompt_tokens"], served_usage["completion_tokens"])


def test_the_documented_config_and_curl_command(served):
    """Runs the doc's ``curl ... -H ... -d ...`` command against the doc's model entry."""
    stub, proxy = served
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    command = re.search(r"```bash\n(curl .*?)```", DOC.read_text(), re.S).group(1)
    command = command.replace("http://localhost:4000", f"http://127.0.0.1:{proxy.port}")
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LITELLM_MASTER_KEY": proxy.key})
    body = json.loads(out.stdout)
    fields = body["choices"][0]["message"]["provider_specific_fields"]["rsa"]
    check_lineage(stub.log("gpt-4o-mini"), n=8, k=4, t=2)  # T from the body, N and K the entry's
    assert fields["config"]["steps"] == 2 and body["usage"]["total_tokens"] > 0


def test_the_proxy_prices_every_call_at_the_inner_models_price(served):
    import litellm

    stub, proxy = served
    raw = client(proxy).chat.completions.with_raw_response.create(model="rsa-priced",
                                                                  messages=QUESTION)
    served_usage = usage_sum(stub.log("gpt-4o-mini-2024-07-18"))
    price = litellm.cost_per_token(model="openai/gpt-4o-mini-2024-07-18",
                                   prompt_tokens=served_usage["prompt_tokens"],
                                   completion_tokens=served_usage["completion_tokens"])
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(sum(price))


@pytest.mark.parametrize("model", ["slow", "slowstream"])
async def test_a_client_that_disconnects_cancels_the_run(served, model):
    stub, proxy = served
    name = f"{model}@3"
    c = client(proxy, openai.AsyncOpenAI)
    task = asyncio.ensure_future(c.chat.completions.create(
        model=f"rsa-{model.replace('slowstream', 'slow-stream')}", messages=QUESTION,
        stream=model == "slowstream"))
    deadline = time.monotonic() + 60
    while not stub.log(name):  # the first step's request is waiting in the stub
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.2)
    task.cancel()  # the client hangs up
    while not all(e["hung_up"] or e["status"] for e in stub.log(name)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    await asyncio.sleep(4)  # longer than one call: a run still going would have sent more
    log = stub.log(name)
    assert len(log) == 1 and log[0]["hung_up"], log  # cancelled in flight, nothing after


@pytest.mark.parametrize("stream", [False, True])
def test_a_wrong_or_missing_key_is_a_401_naming_the_variable(served, stream):
    stub, proxy = served
    c, s = client(proxy), "-stream" if stream else ""
    with pytest.raises(openai.AuthenticationError, match="OPENAI_API_KEY") as wrong:
        c.chat.completions.create(model=f"rsa-wrong-key{s}", messages=QUESTION, stream=stream)
    assert wrong.value.status_code == 401
    assert len(stub.log(f"wrongkey{s}")) == 1  # one refused call, no retries
    with pytest.raises(openai.AuthenticationError, match="ANTHROPIC_API_KEY"):
        c.chat.completions.create(model=f"rsa-no-key{s}", messages=QUESTION, stream=stream)
