"""Mixed lm-eval runs through ``rsa-litellm`` lose nothing (issue 22, item 4).

``--tasks gsm8k,arc_easy``: the generative task runs RSA; the multiple-choice one needs
log-likelihoods.  Against a server that returns prompt log-probabilities (the format stub, like
vLLM, answers ``/v1/completions`` with ``echo``) they are served by lm-eval's own
``local-completions`` and score exactly as that model scores them; against one that returns
none (a chat-only API) the run is refused before its first generation, naming the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from format_stub import FormatStub
from rsa_plugins.validate import ConfigError
from task_suites import choice_rows, copy_task, math_rows, write_rows

N, K, T = 2, 2, 2


def tasks(tmp: Path) -> Any:
    from lm_eval.tasks import TaskManager

    data = tmp / "data"
    math = {"train": write_rows(data / "m_train.jsonl", math_rows(8, 1)),
            "test": write_rows(data / "m_test.jsonl", math_rows(2, 2))}
    arc = {s: write_rows(data / f"a_{s}.jsonl", choice_rows(3, seed))
           for s, seed in (("train", 1), ("validation", 2), ("test", 3))}
    copy_task("gsm8k/gsm8k.yaml", tmp / "tasks", "local_gsm8k", math)
    copy_task("arc/arc_easy.yaml", tmp / "tasks", "local_arc_easy", arc)
    return TaskManager(include_path=str(tmp / "tasks"), include_defaults=False)


def evaluate(manager: Any, model: str, model_args: dict[str, Any], names: list[str]) -> Any:
    import lm_eval

    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=names,
                                   task_manager=manager, bootstrap_iters=0)


def rsa_args(stub: FormatStub) -> dict[str, Any]:
    return {"model": f"hosted_vllm/{stub.model}", "api_base": stub.base_url, "population": N,
            "aggregation_size": K, "steps": T}


def test_log_likelihoods_are_served_next_to_rsa_as_local_completions_scores_them(tmp_path):
    manager = tasks(tmp_path)
    with FormatStub() as stub:
        mixed = evaluate(manager, "rsa-litellm", rsa_args(stub), ["local_gsm8k", "local_arc_easy"])
        chats = stub.log()
        stub.reset()
        plain = evaluate(manager, "local-completions",
                         {"model": stub.model, "base_url": f"{stub.base_url}/completions",
                          "tokenizer_backend": "remote"}, ["local_arc_easy"])
        assert stub.stats()["completions"] > 0
    arc, plain_arc = mixed["results"]["local_arc_easy"], plain["results"]["local_arc_easy"]
    assert arc["acc,none"] == plain_arc["acc,none"] == 1.0
    assert arc["acc_norm,none"] == plain_arc["acc_norm,none"]
    assert mixed["results"]["local_gsm8k"]["exact_match,strict-match"] == 1.0
    assert sum(int(e["body"].get("n") or 1) for e in chats) == 2 * N * T  # RSA on gsm8k only


def test_a_server_without_prompt_logprobs_is_refused_before_any_generation(tmp_path):
    manager = tasks(tmp_path)
    with FormatStub(completions=False) as stub:
        with pytest.raises(ConfigError) as err:
            evaluate(manager, "rsa-litellm", rsa_args(stub), ["local_gsm8k", "local_arc_easy"])
        assert stub.stats()["requests"] == 0  # nothing generated, nothing lost
        # a generative task alone still runs
        alone = evaluate(manager, "rsa-litellm", rsa_args(stub), ["local_gsm8k"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("rsa-litellm cannot score local_arc_easy:")
    assert "prompt log-probabilities" in message
    assert alone["results"]["local_gsm8k"]["exact_match,strict-match"] == 1.0


def test_a_server_that_cannot_be_reached_is_refused_naming_the_task():
    from lm_eval.api.instance import Instance

    from rsa_plugins.adapters.lm_eval.litellm import RSALiteLLM

    lm = RSALiteLLM(model="hosted_vllm/x", api_base="http://127.0.0.1:9/v1")
    req = Instance("loglikelihood", {}, ("ctx", " cont"), 0, ("hellaswag", 0, 1))
    with pytest.raises(ConfigError, match="cannot score hellaswag.*generative variant"):
        lm.loglikelihood([req])


def test_chat_templated_log_likelihoods_without_a_template_are_refused_before_generating(
        tmp_path):
    import lm_eval

    manager = tasks(tmp_path)
    with FormatStub() as stub:  # remote tokenizer, no chat template to render prompts with
        with pytest.raises(ConfigError, match="local_arc_easy scores log-likelihoods of chat"):
            lm_eval.simple_evaluate(model="rsa-litellm", model_args=rsa_args(stub),
                                    tasks=["local_gsm8k", "local_arc_easy"], task_manager=manager,
                                    bootstrap_iters=0, apply_chat_template=True)
        assert stub.stats()["requests"] == 0
