"""RSA through the LiteLLM engine against a real model (SmolLM2-135M on vLLM's CPU server)."""

from __future__ import annotations

import pytest

import rsa_plugins
from rsa_plugins import Problem
from rsa_plugins.metrics import ACCURACY_KEYS, summarize
from rsa_plugins.trace import load

pytestmark = pytest.mark.real

QUESTIONS = [("What is 3 + 4?", "7"), ("What is 10 - 6?", "4"), ("What is 5 * 2?", "10")]
ALWAYS = ("population", "requested", "failed", "truncated", "no_answer", "distinct_answers",
          "answer_entropy", "majority_share", "prompt_tokens", "completion_tokens")


def test_rsa_on_arithmetic_with_a_real_model(vllm_server, tmp_path):
    problems = [Problem(f"{q} Put the final answer in \\boxed{{}}.", target=a, kind="math")
                for q, a in QUESTIONS]
    trace = tmp_path / "trace.jsonl"
    results = rsa_plugins.run(problems, model=f"hosted_vllm/{vllm_server.model_name}",
                              api_base=vllm_server.base_url, population=4, aggregation_size=2,
                              steps=3, max_tokens=96, seed=0, trace=trace, progress=False)
    assert len(results) == 3
    for res in results:
        assert len(res.steps) == 3 and len(res.population) == 4
        for m in res.steps:
            for key in ALWAYS + ACCURACY_KEYS:
                assert key in m, key
            assert m["completion_tokens"] > 0 and m["prompt_tokens"] > 0
            assert m["population"] + m["failed"] == 4
            assert 0.0 <= m["mean_accuracy"] <= m["pass_at_n"] <= 1.0
        # aggregation prompts hold candidates, so later steps read more prompt tokens
        assert res.steps[1]["prompt_tokens"] > res.steps[0]["prompt_tokens"]
        assert res.usage.total_tokens == sum(m["prompt_tokens"] + m["completion_tokens"]
                                             for m in res.steps)
        assert sum(res.votes.values()) <= 4
    events = load(trace)
    gens = [e for e in events if e["event"] == "generation"]
    assert len(gens) == 3 * 4 * 3
    assert all(len(g["parents"]) == 2 for g in gens if g["step"] > 1)
    # the first step's samples are distinct (no cache, distinct seeds)
    first = {g["text"] for g in gens if g["step"] == 1 and g["problem"] == results[0].problem.id}
    assert len(first) > 1
    table = summarize([r.steps for r in results])
    assert [row["step"] for row in table] == [1, 2, 3]
