"""Deterministic scripted models for unit tests of the loop's logic.

Every scripted reply is one line that ends with ``\\boxed{v}`` and its own mark,
``[#SEED.I/STEP]`` (the request's seed, the sample's index, and its step: 1 without quoted
replies, else one more than the quoted replies' steps), digits written as the letters a-j so
that no scorer or extractor reads a number in it.  A reply is a pure
function of the request: a first-step sample draws v from a fixed distribution by hashing
(prompt, seed, index); a request that quotes earlier replies (an aggregation) answers with the
majority of the quoted replies' answers (ties: the first).  Candidates are found in a prompt by
their marks, never by the aggregation prompt's wording, so rewording a prompt breaks no fake.
Each call can be delayed by a hash-derived amount so that completion order differs from
submission order.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rsa_plugins.engines.base import Engine
from rsa_plugins.types import Completion, Request

#: a scripted reply, as quoted in a prompt: its line, up to its mark
REPLY = re.compile(r"[^\n]*\[#([a-j]+\.[a-j]+)/[a-j]+\]")
STEP = re.compile(r"\[#[a-j]+\.[a-j]+/([a-j]+)\]")
_LETTERS = str.maketrans("0123456789", "abcdefghij")
_DIGITS = str.maketrans("abcdefghij", "0123456789")


def mark(seed: int, index: int, step: int) -> str:
    """The mark a scripted reply of that request, sample and step ends with."""
    return f"[#{seed}.{index}/{step}]".translate(_LETTERS)


def mark_key(seed: int, index: int) -> str:
    return f"{seed}.{index}".translate(_LETTERS)
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def user_turn(messages: Sequence[dict[str, str]]) -> str:
    return [m["content"] for m in messages if m["role"] == "user"][-1]


def candidates_in(text: str) -> list[str]:
    """The scripted replies quoted in `text`, in order (whole lines, marks included)."""
    return [m.group(0).strip() for m in REPLY.finditer(text)]


def marks_in(text: str) -> list[str]:
    """The marks (``SEED.I``) of the scripted replies quoted in `text`, in order."""
    return REPLY.findall(text)


def step_in(text: str) -> int:
    """The step of a request whose user turn is `text` (one more than what it quotes)."""
    return 1 + max((int(s.translate(_DIGITS)) for s in STEP.findall(text)), default=0)


def is_aggregation(text: str) -> bool:
    """Whether `text` quotes scripted replies (the loop shows candidates only to aggregations)."""
    return REPLY.search(text) is not None


def scripted_reply(messages: Sequence[dict[str, str]], seed: int, index: int = 0,
                   answers: Sequence[str] = ("42", "41", "7")) -> str:
    user = user_turn(messages)
    quoted = [BOXED.findall(c) for c in candidates_in(user)]
    own = mark(seed, index, step_in(user))
    if quoted:
        found = [b[-1] for b in quoted if b]
        best = Counter(found).most_common(1)[0][0] if found else answers[0]
        return f"Comparing the candidates, the consistent result is \\boxed{{{best}}} {own}"
    pick = answers[_h(user, seed, index) % len(answers)]
    return f"Let me think ({_h(seed, index) % 1000}). So the answer is \\boxed{{{pick}}} {own}"


@dataclass
class Call:
    """One request the scripted engine answered: its step and the marks of what it quoted."""

    request: Request
    step: int
    parents: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)


class ScriptedEngine(Engine):
    """An in-memory engine following the script above; records every request.

    ``calls_of(problem_id)``, ``step_of(request)`` and ``parents_of(request)`` tell the tests
    what the engine saw, from requests alone: the problem by the request's cache key (the loop
    gives a problem's requests its id), the step and parents by the marks its prompt quotes."""

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
        self.by_mark: dict[str, Call] = {}
        self.log: dict[int, Call] = {}  # id(request) -> call

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        self.batches.append(len(requests))
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def step_of(self, request: Request) -> int:
        """The RSA step of `request`: 1, or one more than the step of the replies it quotes."""
        return step_in(user_turn(request.messages))

    def parents_of(self, request: Request) -> list[Call]:
        """The earlier calls whose replies `request` quotes, in the order it shows them."""
        return [self.by_mark[m] for m in marks_in(user_turn(request.messages))]  # seen here

    def calls_of(self, problem_id: str) -> list[Request]:
        return [r for r in self.requests if r.cache_key == problem_id]

    async def _one(self, req: Request) -> list[Completion]:
        self.requests.append(req)
        call = Call(req, self.step_of(req), marks_in(user_turn(req.messages)))
        self.log[id(req)] = call
        if self.delay:
            await asyncio.sleep(self.delay * (_h(req.seed, "delay") % 100) / 100)
        out = []
        for i in range(req.n):
            self.calls += 1
            if self.fail_every and self.calls % self.fail_every == 0:
                out.append(Completion(error="InjectedError: scripted failure"))
                continue
            text = scripted_reply(req.messages, req.seed, i, self.answers)
            self.by_mark[mark_key(req.seed, i)] = call
            call.replies.append(text)
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
