"""rsa-litellm's log-likelihood requests (multiple-choice and perplexity tasks).

RSA applies to generation only; a run that mixes generative and log-likelihood tasks (``--tasks
gsm8k,arc_easy``) gets its log-likelihoods from lm-eval's own ``local-completions`` model on the
same server: prompt log-probabilities from ``/v1/completions`` with ``echo``, exactly as lm-eval
scores them with vLLM.  A server that gives none (chat-only APIs) is found out before the first
generation, and the run refused in one line naming the tasks, so no generation is paid for and
then lost.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from typing import Any

from ...validate import ConfigError
from ._compat import pending_requests

#: lm-eval's request types that score log-likelihoods
LOGLIKELIHOOD = ("loglikelihood", "loglikelihood_rolling")


def pending_loglikelihood() -> list[Any]:
    """The log-likelihood requests pending in the running lm-eval evaluation."""
    pending = pending_requests() or {}
    return [r for kind in LOGLIKELIHOOD for r in pending.get(kind, [])]


def loglikelihood_tasks(requests: list[Any]) -> list[str]:
    return sorted({str(getattr(r, "task_name", "?")) for r in requests})


def refusal(tasks: list[str], why: str) -> str:
    return (f"rsa-litellm cannot score {', '.join(tasks)}: they need log-likelihoods (multiple-"
            f"choice or perplexity tasks), and {why}. Use a generative variant (for example "
            "gpqa_diamond_cot_zeroshot instead of gpqa_diamond_zeroshot), an OpenAI-compatible "
            "server that returns prompt log-probabilities (vLLM: model=hosted_vllm/NAME,"
            "api_base=...), or --model rsa-vllm")


class PromptScorer:
    """lm-eval's ``local-completions`` on the server at `base` (serving `name`), built once a
    probe showed that the server returns prompt log-probabilities.

    `options`: ``tokenizer`` / ``tokenizer_backend`` as lm-eval's ``local-completions`` takes
    them (default: the server's own tokenizer endpoints where it has them, else the Hugging Face
    tokenizer named like the served model), plus its ``num_concurrent``, ``max_retries``,
    ``timeout`` and ``max_length``.
    """

    def __init__(self, server: tuple[str, str, str | None] | None, options: dict[str, Any]) -> None:
        self.server, self.options = server, options
        self._ok: bool | None = None
        self._lm: Any = None

    def why_not(self) -> str | None:
        """None when log-likelihoods can be served, else the reason (one clause)."""
        if self.server is None:
            return "the model is not an OpenAI-compatible server given by api_base"
        if self._ok is None:
            self._ok = probe(*self.server, timeout=float(self.options.get("timeout", 60)))
        return None if self._ok else (f"the server at {self.server[0]} returns no prompt "
                                      "log-probabilities (/v1/completions with echo)")

    def score(self, method: str, requests: list[Any], disable_tqdm: bool,
              chats: dict[str, tuple[list[Any], bool]] | None = None) -> list[Any]:
        """lm-eval's `method` (``loglikelihood`` / ``loglikelihood_rolling``) on `requests`.

        `chats`: contexts that lm-eval rendered through rsa-litellm's chat template (the
        messages as JSON) -> (messages, add_generation_prompt); they are rendered again as
        ``local-completions`` renders a chat (the model's template, from its tokenizer).
        """
        self.prepare(requests, chats or {})
        if chats:
            requests = [self._rendered(r, chats) for r in requests]
        return getattr(self._lm, method)(requests, disable_tqdm=disable_tqdm)

    def prepare(self, requests: list[Any], chats: dict[str, tuple[list[Any], bool]]) -> None:
        """Make sure `requests` can be scored (a one-line `ConfigError` otherwise)."""
        why = self.why_not()
        if why is not None:
            raise ConfigError(refusal(loglikelihood_tasks(requests), why))
        if self._lm is None:
            from lm_eval.models.openai_completions import LocalCompletionsAPI

            base, name, key = self.server  # type: ignore[misc]
            opts = {k: v for k, v in self.options.items() if v is not None}
            opts.setdefault("tokenizer_backend", "auto")
            if opts["tokenizer_backend"] == "huggingface":
                opts.setdefault("tokenizer", name)
            self._lm = LocalCompletionsAPI(base_url=f"{base}/completions", model=name,
                                           auth_token=key, **opts)
        for request in requests:  # chat-templated prompts can be rendered as lm-eval would
            if request.args[0] in chats:
                self._rendered(request, chats)
                break

    def _rendered(self, request: Any, chats: dict[str, tuple[list[Any], bool]]) -> Any:
        found = chats.get(request.args[0])
        if found is None:
            return request
        text = self._lm.apply_chat_template(found[0], add_generation_prompt=found[1])
        if type(text) is not str:  # lm-eval keeps the messages: no template to render with
            raise ConfigError(
                f"rsa-litellm: {request.task_name} scores log-likelihoods of chat-templated "
                "prompts, which needs the model's chat template: pass tokenizer=<its Hugging "
                "Face tokenizer>,tokenizer_backend=huggingface in --model_args, or run it "
                "without --apply_chat_template")
        return dataclasses.replace(request, arguments=(text, *request.args[1:]))


def probe(base: str, name: str, key: str | None, timeout: float = 60.0) -> bool:
    """Whether ``{base}/completions`` echoes a prompt with its token log-probabilities."""
    body = {"model": name, "prompt": "The sky is blue.", "max_tokens": 1, "temperature": 0,
            "logprobs": 1, "echo": True}
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{base}/completions", data=json.dumps(body).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            choice = json.loads(resp.read())["choices"][0]
        logprobs = choice["logprobs"]["token_logprobs"]
    except Exception:  # noqa: BLE001 - any failure means: not served
        return False
    return isinstance(logprobs, list) and len(logprobs) > 1
