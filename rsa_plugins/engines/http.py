"""The direct transport of `LiteLLMEngine`: an OpenAI-compatible server over plain HTTP.

Keep-alive connections per event loop (`wire.Client`); chat completions posted as JSON; and
vLLM's extras where the server has them: its context length from ``/v1/models`` and exact
prompt counts from ``/tokenize`` (chat template and prefill included).
"""

from __future__ import annotations

import json
from typing import Any

from ..types import Completion, Request
from .errors import EmptyCompletion, HTTPStatusError
from .wire import Client

#: request fields that configure LiteLLM, not the server
_CLIENT_FIELDS = ("timeout", "caching", "num_retries", "api_base", "api_key")


class OpenAIServer:
    """`base` is the server's OpenAI base URL (``http://host:port/v1``), `model` the name it
    serves, `key` its API key (if any)."""

    def __init__(self, base: str, model: str, key: str | None, timeout: float) -> None:
        self.base, self.model, self.key, self.timeout = base.rstrip("/"), model, key, timeout
        # one connection pool for the OpenAI routes (under /v1) and vLLM's /tokenize (beside it)
        root = self.base.removesuffix("/v1")
        self._v1 = self.base[len(root):]
        self._client = Client(root, {"Authorization": f"Bearer {key}"} if key else None)
        self._tokenize: bool | None = None  # whether the server has vLLM's /tokenize

    async def context_length(self) -> int | None:
        """The served model's ``max_model_len`` when the server reports it (vLLM does)."""
        try:
            resp = await self._client.request("GET", f"{self._v1}/models", timeout=10)
            models = resp.json().get("data", []) if resp.status == 200 else []
        except Exception:  # noqa: BLE001 - an unreachable server shows up on the first call
            return None
        for m in models:
            if m.get("id") == self.model and isinstance(m.get("max_model_len"), int):
                return int(m["max_model_len"])
        return None

    async def count(self, request: Request) -> int | None:
        """Prompt tokens of `request` from vLLM's ``/tokenize``; None where it has none."""
        if self._tokenize is False:
            return None
        prefill = request.prefill is not None
        body = {"model": self.model, "messages": request.messages,
                "add_generation_prompt": not prefill, "continue_final_message": prefill}
        try:
            resp = await self._client.request("POST", "/tokenize", body, self.timeout)
            if resp.status == 200:
                self._tokenize = True
                return int(resp.json()["count"])
            if resp.status in (404, 405):
                self._tokenize = False
        except Exception:  # noqa: BLE001 - the caller falls back to an estimate
            pass
        return None

    async def complete(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """One chat completion; returns the decoded JSON body."""
        body = {k: v for k, v in kwargs.items() if k not in _CLIENT_FIELDS}
        body["model"] = self.model
        extra = body.pop("extra_body", None)
        if extra:
            body.update(extra)
        headers = body.pop("extra_headers", None)
        resp = await self._client.request("POST", f"{self._v1}/chat/completions", body,
                                          self.timeout, headers)
        if resp.status >= 400:
            raise HTTPStatusError(resp.status, resp.body.decode("utf-8", "replace"), resp.headers)
        try:
            decoded = json.loads(resp.body)
        except ValueError as exc:
            raise EmptyCompletion(f"malformed response body: {exc}") from None
        if not isinstance(decoded, dict):
            raise EmptyCompletion("malformed response body: not a JSON object")
        return decoded

    async def aclose(self) -> None:
        """Close the idle connections (they reopen on the next call)."""
        await self._client.aclose()


def parse_choices(response: Any, n: int) -> list[Completion]:
    """Completions from a LiteLLM response object or a decoded chat-completions body."""
    if isinstance(response, dict):
        return _parse_body(response)
    choices = list(_field(response, "choices") or [])
    if not choices:
        raise EmptyCompletion("response has no choices")
    usage = _field(response, "usage")
    out = []
    for ch in choices:
        msg = _field(ch, "message")
        out.append((_field(msg, "content"),
                    _field(msg, "reasoning_content") or _field(msg, "reasoning") or None,
                    _field(ch, "finish_reason")))
    return _completions(out, _field(usage, "prompt_tokens"), _field(usage, "completion_tokens"),
                        _field(_field(usage, "completion_tokens_details"), "reasoning_tokens"))


def _parse_body(body: dict[str, Any]) -> list[Completion]:
    """`parse_choices` for a decoded JSON body (the direct transport's fast path)."""
    choices = body.get("choices")
    if not choices or not isinstance(choices, list):
        raise EmptyCompletion("response has no choices")
    usage = body.get("usage") or {}
    out = []
    for ch in choices:
        msg = ch.get("message") or {}
        out.append((msg.get("content"), msg.get("reasoning_content") or msg.get("reasoning")
                    or None, ch.get("finish_reason")))
    return _completions(out, usage.get("prompt_tokens"), usage.get("completion_tokens"),
                        (usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))


def _completions(choices: list[tuple[Any, Any, Any]], prompt: Any, completion: Any,
                 reasoning_tokens: Any = None) -> list[Completion]:
    """(content, reasoning, finish reason) per choice -> completions; the usage's completion
    (and reasoning) tokens are shared out over the choices, its prompt tokens go to the first."""
    prompt, completion, count = int(prompt or 0), int(completion or 0), len(choices)
    thinking = int(reasoning_tokens or 0)
    out = []
    for i, (content, reasoning, finish) in enumerate(choices):
        text = content if isinstance(content, str) else ""
        if not reasoning and not text.strip():
            raise EmptyCompletion("the model returned an empty completion")
        out.append(Completion(text=text, reasoning=reasoning,
                              prompt_tokens=prompt if i == 0 else 0,
                              completion_tokens=_share(completion, i, count),
                              reasoning_tokens=_share(thinking, i, count), finish_reason=finish))
    return out


def _share(total: int, i: int, parts: int) -> int:
    """Choice `i`'s part of `total` tokens split evenly over `parts` choices."""
    return total // parts + (1 if i < total % parts else 0)


def _field(obj: Any, name: str) -> Any:
    """`obj[name]` for dicts, `obj.name` for objects, None when absent."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)
