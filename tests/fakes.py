"""Deterministic scripted models for unit tests of the loop's logic.

The script: a first-step sample answers ``\\boxed{v}`` with v drawn from a fixed distribution by
hashing (prompt, seed, choice index); an aggregation call answers with the majority of the
boxed answers in its prompt (ties: the first).  Replies are pure functions of the request, so
tests can replay and compare runs.  Each call can be delayed by a hash-derived amount so that
completion order differs from submission order.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rsa_plugins.engines.base import Engine
from rsa_plugins.types import Completion, Request

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
CANDIDATE_BLOCK = re.compile(r"---- (?:Solution \d+|Candidate) ----\n(.*?)(?=\n\n---- |\n\nNow )", re.S)


PROBLEM_IN_AGGREGATION = re.compile(r"Problem:\n(.*?)\n\n(?:Candidate responses|---- Candidate ----)",
                                    re.S)


def problem_prompt(request: Request) -> str:
    """The problem a request is about: its user turn, or the problem quoted by an aggregation."""
    user = [m["content"] for m in request.messages if m["role"] == "user"][-1]
    found = PROBLEM_IN_AGGREGATION.search(user) if request.parents else None
    return found.group(1) if found else user


def step_of(request: Request) -> int:
    """The RSA step a request belongs to (its parents' step + 1; 1 without parents)."""
    return request.parents[0].step + 1 if request.parents else 1


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def is_aggregation(text: str) -> bool:
    return "---- Solution 1 ----" in text or "---- Candidate ----" in text


def candidates_in(text: str) -> list[str]:
    return [c.strip() for c in CANDIDATE_BLOCK.findall(text)]


def scripted_reply(messages: Sequence[dict[str, str]], seed: int, index: int = 0,
                   answers: Sequence[str] = ("42", "41", "7")) -> str:
    user = [m["content"] for m in messages if m["role"] == "user"][-1]
    if is_aggregation(user):
        found = BOXED.findall("\n".join(candidates_in(user)))
        best = Counter(found).most_common(1)[0][0] if found else answers[0]
        return f"Comparing the candidates, the consistent result is \\boxed{{{best}}}"
    pick = answers[_h(user, seed, index) % len(answers)]
    return f"Let me think ({_h(seed, index) % 1000}). So the answer is \\boxed{{{pick}}}"


class ScriptedEngine(Engine):
    """An in-memory engine following the script above; records every request."""

    name = "scripted"

    def __init__(self, supports_n: bool = False, delay: float = 0.0,
                 answers: Sequence[str] = ("42", "41", "7"), fail_every: int = 0,
                 lockstep: bool = False) -> None:
        self.supports_n, self.delay, self.answers = supports_n, delay, answers
        self.prefers_lockstep = lockstep
        self.fail_every = fail_every
        self.requests: list[Request] = []
        self.batches: list[int] = []
        self.finished: list[tuple[str, int]] = []  # (first message hash, seed) in completion order
        self.calls = 0

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        self.batches.append(len(requests))
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, req: Request) -> list[Completion]:
        self.requests.append(req)
        if self.delay:
            await asyncio.sleep(self.delay * (_h(req.seed, "delay") % 100) / 100)
        out = []
        for i in range(req.n):
            self.calls += 1
            if self.fail_every and self.calls % self.fail_every == 0:
                out.append(Completion(error="InjectedError: scripted failure"))
                continue
            text = scripted_reply(req.messages, req.seed, i, self.answers)
            out.append(Completion(text=text, prompt_tokens=len(req.messages[-1]["content"]) // 4,
                                  completion_tokens=len(text) // 4, finish_reason="stop"))
        self.finished.append((req.messages[-1]["content"][:40], req.seed))
        return out


def make_fake_llm(answers: Sequence[str] = ("42", "41", "7"), delay: float = 0.0) -> Any:
    """A LiteLLM `CustomLLM` following the script (register under provider ``fakellm``)."""
    import litellm
    from litellm import CustomLLM, ModelResponse

    class FakeLLM(CustomLLM):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[dict[str, Any]] = []

        def _respond(self, messages: list, optional_params: dict) -> ModelResponse:
            n = int(optional_params.get("n") or 1)
            seed = int(optional_params.get("seed") or 0)
            self.calls.append({"messages": messages, "n": n, "seed": seed,
                               "params": dict(optional_params), "t": time.monotonic()})
            texts = [scripted_reply(messages, seed, i, answers) for i in range(n)]
            prompt_tokens = sum(len(m["content"]) for m in messages) // 4
            return ModelResponse(
                choices=[{"index": i, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)],
                usage={"prompt_tokens": prompt_tokens,
                       "completion_tokens": sum(len(t) // 4 for t in texts),
                       "total_tokens": prompt_tokens + sum(len(t) // 4 for t in texts)},
            )

        def completion(self, model, messages, *args, optional_params=None, **kwargs):  # noqa: ANN001
            return self._respond(messages, optional_params or kwargs.get("optional_params", {}))

        async def acompletion(self, model, messages, *args, optional_params=None, **kwargs):  # noqa: ANN001
            params = optional_params or kwargs.get("optional_params", {})
            if delay:
                await asyncio.sleep(delay * (_h(params.get("seed"), "d") % 100) / 100)
            return self._respond(messages, params)

    handler = FakeLLM()
    litellm.custom_provider_map = [{"provider": "fakellm", "custom_handler": handler}]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
    return handler
