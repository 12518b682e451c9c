"""The small data types shared by the loop, the engines and the adapters."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

#: one chat message: ``{"role": "system" | "user" | "assistant", "content": str}``
Message = dict[str, str]
#: scorer(answer, candidate_text, problem) -> score in [0, 1] (1 means correct)
Scorer = Callable[[Any, str, "Problem"], float]


class Tokenizer(Protocol):
    """What the loop needs of a tokenizer (Hugging Face tokenizers qualify)."""

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


@dataclass
class Problem:
    """One task instance with its whole chat.

    The chat an engine receives for a problem is `system`, then the `fewshot` turns, then a
    user turn (`prompt` at the first step, an aggregation prompt quoting `prompt` later), then
    `prefill` as the start of the assistant's reply (lm-eval's ``gen_prefix``, an Inspect
    assistant prefill).  `chat=False` marks a prompt that is plain text, sent without a chat
    template by engines that render prompts themselves (lm-eval without
    ``--apply_chat_template``).

    `kind` says how answers are extracted and compared (``auto``: detected from the prompt).
    `answer_format` is set only where RSA itself chose the answer format (its own tasks, the
    ``rsa`` CLI, an Inspect preset): a clause such as "the final answer written as
    \\boxed{...}" that aggregation prompts repeat.  Without it, aggregation asks for an answer in
    the form the problem itself asks for (its instructions and examples).
    """

    prompt: str
    id: str = ""
    target: Any = None
    kind: str = "auto"
    choices: list[str] | None = None
    scorer: Scorer | None = None
    system: str | None = None
    fewshot: list[Message] = field(default_factory=list)
    prefill: str | None = None
    answer_format: str | None = None
    chat: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("problem prompt must be a non-empty string")
        for turn in self.fewshot:
            if turn.get("role") not in ("user", "assistant") or not isinstance(turn.get("content"), str):
                raise ValueError("problem fewshot turns must be {'role': 'user' | 'assistant', "
                                 f"'content': str}}, got {turn!r}")
        if not self.id:
            self.id = hashlib.sha256(self.prompt.encode()).hexdigest()[:12]

    def messages(self, user: str | None = None) -> list[Message]:
        """The chat for one request: system, few-shot turns, `user` (default: the prompt), prefill."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs += [dict(t) for t in self.fewshot]
        msgs.append({"role": "user", "content": self.prompt if user is None else user})
        if self.prefill:
            msgs.append({"role": "assistant", "content": self.prefill})
        return msgs


@dataclass
class Request:
    """One generation: the chat plus sampling settings; `n` > 1 only at first steps.

    A last message with role ``assistant`` is a prefill the reply continues.  `chat=False`:
    engines that render prompts join the messages as plain text instead of applying the
    model's chat template.  `cache_key`: requests with the same key share a long prompt prefix
    (the loop gives one problem's requests its id); engines that spread requests over replicas
    keep a key's requests on one, where the prefix is cached.  An engine that builds its own
    aggregation calls (`Engine.aggregation_request`) may return a subclass with fields of its
    own; every other engine needs only these.
    """

    messages: list[Message]
    seed: int
    n: int = 1
    temperature: float = 1.0
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    chat: bool = True
    cache_key: str | None = None

    def with_messages(self, messages: list[Message]) -> Request:
        """A copy with other messages (the same sampling and fields, subclasses' too)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.messages = messages
        return copy

    @property
    def prefill(self) -> str | None:
        """The assistant prefill this request continues, if any."""
        last = self.messages[-1] if self.messages else None
        return last["content"] if last is not None and last.get("role") == "assistant" else None


@dataclass
class Completion:
    """What an engine returns for one sample.  `error` is set when the call failed for good.

    `text` is what the model generated (after any prefill, which it does not repeat).
    `reasoning_tokens`: the part of `completion_tokens` spent reasoning, where the provider says.
    """

    text: str = ""
    reasoning: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    retries: int = 0
    #: an engine may supply the answer itself (structured outputs); else it is extracted
    answer: Any = None
    #: the engine's own record of this generation, for the adapter that made the engine (a
    #: DSPy prediction's output fields, an Inspect choice); the core carries it, never reads it
    native: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class Candidate:
    """A member of a population: a completion plus where it came from."""

    step: int
    slot: int
    parents: list[int]
    seed: int
    completion: Completion
    answer: Any = None
    score: float | None = None

    @property
    def text(self) -> str:
        return self.completion.text


@dataclass
class Usage:
    """Token and call counts of one problem's run (every step summed)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    failed: int = 0
    retries: int = 0
    #: the part of `completion_tokens` spent reasoning, where the provider says
    reasoning_tokens: int = 0

    def add(self, comp: Completion) -> None:
        """Count one generation (a failed one too)."""
        self.prompt_tokens += comp.prompt_tokens
        self.completion_tokens += comp.completion_tokens
        self.reasoning_tokens += comp.reasoning_tokens
        self.calls += 1
        self.failed += not comp.ok
        self.retries += comp.retries

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


#: why a problem ended before its last step
STOP_REASONS = ("unanimous", "consensus", "budget", "failed")


@dataclass(frozen=True)
class Stop:
    """Where and why a problem ended before step T: after `step` (its population is the
    final one), because its answers agreed (``unanimous``, ``consensus``), the run's budget
    could not pay for another step (``budget``), or every generation of `step` failed
    (``failed``: the previous population, if any member of it succeeded, is the final one)."""

    step: int
    reason: str


@dataclass
class RSAResult:
    """The outcome for one problem.

    `stopped` says where and why a problem ended before step T (None: it ran every step);
    `kind` is the answer kind its answers were extracted and compared as.
    `degraded_at` is the step whose generations all failed, when the run then kept the
    previous population for the final answer (None when every step produced candidates).
    """

    problem: Problem
    answer: Any
    text: str
    chosen: int | None
    population: list[Candidate]
    steps: list[dict[str, Any]]
    usage: Usage
    votes: dict[str, int]
    failed: bool = False
    degraded_at: int | None = None
    stopped: Stop | None = None
    kind: str = "general"

    @property
    def correct(self) -> bool | None:
        """Whether the chosen candidate was scored correct.

        None without a scorer or target, and for a failed problem (reported, not scored wrong).
        """
        if self.chosen is None:
            return None
        score = self.population[self.chosen].score
        return None if score is None else score >= 1.0

    def __repr__(self) -> str:
        stop = f", stopped={self.stopped.reason}@{self.stopped.step}" if self.stopped else ""
        return (f"RSAResult(answer={self.answer!r}, population={len(self.population)}, "
                f"steps={len(self.steps)}, failed={self.failed}{stop})")
