"""A chat-completions request for ``rsa/<model>`` as an RSA run.

The chat becomes a `Problem`: system (and developer) messages its system prompt, earlier
user/assistant turns its few-shot turns, the last user turn the problem, a trailing assistant
message the prefill.  The ``rsa`` settings become an `RSAConfig`: those of the proxy's model
entry, overridden key by key by the request's ``rsa`` and then by ``extra_body={"rsa": ...}``.
The OpenAI sampling parameters (temperature, top_p, max_tokens, stop, seed) fill the `RSAConfig`
fields of the same name that ``rsa`` leaves open; every other parameter goes to every inner call.

A request that RSA cannot run as one problem (it carries tools, its chat holds tool calls or
non-text content) is passed to the inner model unchanged, and its response says so.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import sys
from collections.abc import Mapping
from typing import Any

from ...config import RSAConfig
from ...types import Message, Problem
from ...validate import ConfigError, check_int, check_known

logger = logging.getLogger("rsa_plugins.litellm")
_warned: list[bool] = []  # the temperature-0 warning, once per process

#: OpenAI parameters that fill the RSAConfig field of the same name (``rsa`` wins)
SAMPLING = ("temperature", "top_p", "max_tokens", "stop", "seed")
#: parameters that LiteLLM's stream wrapper or the router handle, never sent to inner calls
DROPPED = ("stream", "stream_options", "max_retries", "n", "rsa", "max_completion_tokens")
#: parameters that make a request one RSA cannot run on a text chat
TOOLS = ("tools", "functions")


@dataclasses.dataclass
class Plan:
    """What to do with one request: run RSA (`problem` set) or pass it through (`passthrough`
    says why).  `options` go to the inner model's engine (api_base, api_key, timeout and the
    parameters of every call); `n` is the number of choices to return; `params` are the
    request's parameters as they came (``extra_body`` without its ``rsa``), for a pass-through."""

    inner: str
    config: RSAConfig
    options: dict[str, Any]
    n: int = 1
    problem: Problem | None = None
    passthrough: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


def plan(model: str, messages: list[Any], params: Mapping[str, Any],
         litellm_params: Mapping[str, Any] | None, api_base: str | None, api_key: str | None,
         timeout: Any) -> Plan:
    """The plan for one request (`model` is the inner model: LiteLLM strips ``rsa/``)."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("rsa models are named rsa/<inner model>, e.g. rsa/openai/gpt-4o-mini")
    params = dict(params)
    extra_body = dict(params.pop("extra_body", None) or {})
    settings = {**deployment_settings(litellm_params), **_mapping(params.get("rsa")),
                **_mapping(extra_body.pop("rsa", None))}
    check_known("rsa option", settings, (f.name for f in dataclasses.fields(RSAConfig)))
    explicit = set(settings)
    for key in SAMPLING:
        if key not in settings and params.get(key) is not None:
            settings[key] = params[key]
    if "max_tokens" not in settings and params.get("max_completion_tokens") is not None:
        settings["max_tokens"] = params["max_completion_tokens"]
    _sampling_rules(settings, explicit)
    config = RSAConfig(**settings)
    calls = {k: v for k, v in params.items() if k not in DROPPED and k not in SAMPLING}
    if extra_body:
        calls["extra_body"] = params["extra_body"] = extra_body
    options = {"api_base": api_base, "api_key": api_key, "timeout": _seconds(timeout),
               "concurrency": config.concurrency, **calls}
    out = Plan(model, config, options, params=params)
    if any(params.get(k) for k in TOOLS):
        out.passthrough = ("the request carries tools: RSA passes tool-calling requests to the "
                           "inner model unchanged")
        return out
    out.problem, out.passthrough = chat_problem(messages)
    if out.problem is not None:
        out.n = check_int("n", params.get("n") or 1, 1, config.population)
        if out.n > 1 and params.get("stream"):
            raise ConfigError("n > 1 needs stream=False (a stream carries one choice: the "
                              "selected answer)")
    return out


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"rsa must be a mapping such as {{'population': 8}}, got {value!r}")
    return dict(value)


def _sampling_rules(settings: dict[str, Any], explicit: set[str]) -> None:
    """Temperature 0 from the request would make every candidate identical: RSA samples at its
    own temperature then (``rsa={"temperature": 0}`` still means 0).  Without a seed, each
    request draws one (reported in the response), as a model samples anew on each call."""
    if settings.get("temperature") is not None and "temperature" not in explicit:
        try:
            greedy = float(settings["temperature"]) <= 0
        except (TypeError, ValueError):
            greedy = False
        if greedy and not _warned:
            _warned.append(True)
            logger.warning("rsa: the request asks for temperature 0, which would make every "
                           "candidate identical; sampling at %s (set rsa={'temperature': ...} "
                           "to choose)", RSAConfig.temperature)
        if greedy:
            settings.pop("temperature")
    if settings.get("seed") is None:
        settings["seed"] = secrets.randbelow(2**31)
    if isinstance(settings.get("stop"), str):
        settings["stop"] = [settings["stop"]]


def _seconds(timeout: Any) -> float:
    """A per-call timeout in seconds from a number or an ``httpx.Timeout``."""
    if timeout is None:
        return 600.0
    if isinstance(timeout, (int, float)):
        return float(timeout)
    for attr in ("read", "timeout"):
        value = getattr(timeout, attr, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 600.0


def deployment_settings(litellm_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``rsa`` settings of the LiteLLM proxy's model entry that serves this request (the
    request's own ``rsa`` replaces them as a whole before they reach the provider)."""
    server = sys.modules.get("litellm.proxy.proxy_server")
    router = getattr(server, "llm_router", None)
    model_id = ((litellm_params or {}).get("model_info") or {}).get("id")
    if router is None or not model_id:
        return {}
    try:
        deployment = router.get_deployment(model_id=model_id)
        found = dict(deployment.litellm_params).get("rsa") if deployment is not None else None
    except Exception:  # noqa: BLE001 - another router layout: the request's settings only
        return {}
    return _mapping(found)


def chat_problem(messages: list[Any]) -> tuple[Problem | None, str | None]:
    """(the chat as a `Problem`, None), or (None, why RSA passes it through)."""
    systems: list[str] = []
    turns: list[Message] = []
    for m in messages:
        m = m if isinstance(m, Mapping) else dict(m)
        role = m.get("role")
        if role in ("tool", "function") or m.get("tool_calls") or m.get("function_call"):
            return None, "the chat holds tool calls: RSA passes it to the inner model unchanged"
        text = _text(m.get("content"))
        if text is None:
            return None, ("the chat holds non-text content: RSA passes it to the inner model "
                          "unchanged")
        if role in ("system", "developer"):
            systems.append(text)
        elif role in ("user", "assistant"):
            if text.strip():
                turns.append({"role": role, "content": text})
        else:
            raise ConfigError(f"message role must be system, developer, user or assistant; "
                              f"got {role!r}")
    prefill = turns.pop()["content"] if turns and turns[-1]["role"] == "assistant" else None
    if not turns or turns[-1]["role"] != "user":
        raise ConfigError("rsa needs a chat whose last user message is the problem to solve")
    prompt = turns.pop()["content"]
    return Problem(prompt=prompt, system="\n\n".join(systems) or None, fewshot=turns,
                   prefill=prefill), None


def _text(content: Any) -> str | None:
    """The text of a message's content (a string or text parts); None for other content."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                return None
            texts.append(str(part.get("text") or ""))
        return "".join(texts)
    return None
