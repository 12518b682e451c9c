"""The small data types shared by the loop, the engines and the adapters."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

#: scorer(answer, candidate_text, problem) -> score in [0, 1] (1 means correct)
Scorer = Callable[[Any, str, "Problem"], float]


@dataclass
class Problem:
    """One task instance.  `prompt` is sent verbatim as the first user message."""

    prompt: str
    id: str = ""
    target: Any = None
    kind: str = "auto"
    choices: list[str] | None = None
    scorer: Scorer | None = None
    system: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("problem prompt must be a non-empty string")
        if not self.id:
            self.id = hashlib.sha256(self.prompt.encode()).hexdigest()[:12]


@dataclass
class Request:
    """One generation request: chat messages plus sampling; `n` > 1 only for first steps."""

    messages: list[dict[str, str]]
    seed: int
    n: int = 1
    temperature: float = 1.0
    top_p: float | None = None
    max_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # context for engines that build their own calls (e.g. DSPy predictors); not sent as is
    problem: Problem | None = None
    step: int = 1
    parents: list[Candidate] = field(default_factory=list)


@dataclass
class Completion:
    """What an engine returns for one sample.  `error` is set when the call failed for good."""

    text: str = ""
    reasoning: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    retries: int = 0
    #: an engine may supply the answer itself (structured outputs); else it is extracted
    answer: Any = None

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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    failed: int = 0
    retries: int = 0

    def add(self, c: Completion) -> None:
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens
        self.calls += 1
        self.failed += 0 if c.ok else 1
        self.retries += c.retries

    def merge(self, other: Usage) -> None:
        for k in ("prompt_tokens", "completion_tokens", "calls", "failed", "retries"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class RSAResult:
    """The outcome for one problem."""

    problem: Problem
    answer: Any
    text: str
    chosen: int | None
    population: list[Candidate]
    steps: list[dict[str, Any]]
    usage: Usage
    votes: dict[str, int]
    failed: bool = False

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
        return (f"RSAResult(answer={self.answer!r}, population={len(self.population)}, "
                f"steps={len(self.steps)}, failed={self.failed})")
