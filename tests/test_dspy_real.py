"""dspy.RSA against the real SmolLM2-135M on vLLM's CPU server (session fixture `vllm_server`).

Call counts and token totals are checked against the server's own Prometheus counters, so they
count requests that really reached the model (a DSPy cache hit never does).  SmolLM2-135M
follows DSPy's ChatAdapter format only near-greedy and only with demos, and it never produced a
parsable aggregation in our runs: these tests therefore run at temperature 0 with two demos on
the generator, and assert behaviour (calls, usage, population, state), not answers.  Distinct
rollout ids are what keep the N x T identical-looking calls from collapsing into cache hits.
"""

from __future__ import annotations

import re
import urllib.request
from collections import Counter

import pytest

dspy = pytest.importorskip("dspy")

from rsa_plugins.adapters.dspy import RSA  # noqa: E402

pytestmark = [pytest.mark.real,
              pytest.mark.filterwarnings("ignore:rollout_id has no effect when temperature=0")]

SIGNATURE = "question -> reasoning_summary, answer"
DEMOS = [("What is 1+1?", "One plus one is two.", "1+1=2", "2"),
         ("What is 3+4?", "Three plus four is seven.", "3+4=7", "7")]


@pytest.fixture(autouse=True)
def fresh_cache():
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    yield


def server_counters(server) -> dict[str, float]:
    """Finished requests and token totals as counted by vLLM itself."""
    root = server.base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(root + "/metrics", timeout=10) as resp:
        text = resp.read().decode()

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^vllm:{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))

    return {"requests": total("request_success_total"), "prompt": total("prompt_tokens_total"),
            "completion": total("generation_tokens_total")}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: int(after[k] - before[k]) for k in before}


def make_lm(server, **kwargs):
    return dspy.LM(f"hosted_vllm/{server.model_name}", api_base=server.base_url, max_tokens=96,
                   **kwargs)


def make_rsa(**kwargs) -> RSA:
    rsa = RSA(SIGNATURE, temperature=0.0, **kwargs)
    rsa.generate.predict.demos = [
        dspy.Example(question=q, reasoning=r, reasoning_summary=s, answer=a) for q, r, s, a in DEMOS]
    return rsa


def history_usage(lm) -> tuple[int, int]:
    return (sum(h["usage"].get("prompt_tokens", 0) for h in lm.history),
            sum(h["usage"].get("completion_tokens", 0) for h in lm.history))


def test_exactly_n_times_t_calls_reach_the_server(vllm_server):
    lm = make_lm(vllm_server)
    rsa = make_rsa(population=4, aggregation_size=2, steps=2)
    before = server_counters(vllm_server)
    with dspy.context(lm=lm, track_usage=True,
                      adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        pred = rsa(question="What is 2+3?")
    d = delta(before, server_counters(vllm_server))
    print(f"\n[dspy real] steps={pred.rsa.steps} server={d}")
    assert d["requests"] == 4 * 2 == len(lm.history)
    assert len({h["kwargs"]["rollout_id"] for h in lm.history}) == 8
    usage = pred.get_lm_usage()[lm.model]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (d["prompt"], d["completion"])
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == history_usage(lm)
    assert sum(s["prompt_tokens"] for s in pred.rsa.steps) == d["prompt"]
    assert len(pred.completions) == 4
    assert [s["requested"] for s in pred.rsa.steps] == [4, 4]
    failed = sum(s["failed"] for s in pred.rsa.steps)
    assert pred.rsa.usage.failed == failed  # unparsable generations are counted, not raised


def test_json_fallback_and_usage_with_the_default_adapter(vllm_server):
    lm = make_lm(vllm_server)
    rsa = make_rsa(population=4, aggregation_size=2, steps=2)
    before = server_counters(vllm_server)
    with dspy.context(lm=lm, track_usage=True):  # ChatAdapter, JSONAdapter fallback on
        pred = rsa(question="What is 5+2?")
    d = delta(before, server_counters(vllm_server))
    per_call = Counter(h["kwargs"]["rollout_id"] for h in lm.history)
    print(f"\n[dspy real] server={d} calls per rollout id={sorted(per_call.values())}")
    assert len(per_call) == 8 and set(per_call.values()) <= {1, 2}  # one retry = fallback
    assert d["requests"] == len(lm.history) == sum(per_call.values())
    usage = pred.get_lm_usage()[lm.model]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (d["prompt"], d["completion"])
    assert len(pred.completions) == 4


def test_bootstrap_save_load_against_the_server(vllm_server, tmp_path):
    lm = make_lm(vllm_server)
    student = make_rsa(population=2, aggregation_size=2, steps=2)
    trainset = [dspy.Example(question="What is 2+2?", answer="4").with_inputs("question")]
    opt = dspy.BootstrapFewShot(metric=lambda ex, pred, trace=None: True,
                                max_bootstrapped_demos=1, max_labeled_demos=0, max_rounds=1)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        compiled = opt.compile(student, trainset=trainset)
        gen_demos = compiled.generate.predict.demos
        agg_demos = compiled.aggregate.predict.demos
        print(f"\n[dspy real] bootstrapped demos: generate={len(gen_demos)} aggregate={len(agg_demos)}")
        # the generator parses greedily; its demo comes from the RSA run's own trace
        assert len(gen_demos) == 1 and gen_demos[0].get("augmented")
        assert gen_demos[0]["question"] == "What is 2+2?"
        for demo in agg_demos:  # SmolLM2 rarely parses aggregations; when it does, they count
            assert demo.get("augmented") and isinstance(demo["candidate_solutions"], list)

        path = tmp_path / "rsa.json"
        compiled.save(str(path))
        loaded = RSA(SIGNATURE, population=2, aggregation_size=2, steps=2, temperature=0.0)
        loaded.load(str(path))
        assert loaded.dump_state() == compiled.dump_state()

        first = compiled(question="What is 6+1?")
        before = server_counters(vllm_server)
        second = loaded(question="What is 6+1?")
        d = delta(before, server_counters(vllm_server))
    assert d["requests"] == 0  # the loaded program sent exactly the same requests: cache hits
    assert second.completions.answer == first.completions.answer
    assert second.completions.reasoning == first.completions.reasoning
