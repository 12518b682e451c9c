"""Context fitting: requests that fit the engine's context, whatever the engine.

When the engine knows its context length (`Engine.max_model_len`), a first-step request gets the
room its prompt leaves as its generation budget (or fails alone when the problem does not fit),
and an aggregation request is fitted in two moves: first its generation budget shrinks (down to
a quarter of what was asked, at least 256 tokens), then its candidates are cut to their tails,
tightened until the engine's own count says the prompt fits (each try builds the prompt again
from `prompts.aggregation_prompt`).  Counts come from the engine
(`prompt_tokens`, chat template and prefill included); a cheap upper bound skips the count when
a prompt fits for sure.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RSAConfig
from .engines.base import Engine
from .prompts import aggregation_prompt, tail
from .types import Problem, Request


@dataclass
class Fit:
    """A fitted request, or None with the reason it cannot fit; `cut`: budget or candidates cut."""

    request: Request | None
    error: str | None = None
    cut: bool = False


async def fit_first(engine: Engine, request: Request) -> Fit:
    """The first-step request with a budget that fits the context (or why the problem cannot)."""
    limit = engine.max_model_len
    if not limit:
        return Fit(request)
    used = await engine.prompt_tokens(request)
    room = limit - used
    if room < 1:
        return Fit(None, f"the problem alone ({used} tokens) does not fit the model's context "
                         f"of {limit} tokens")
    request.max_tokens = min(request.max_tokens or room, room)  # a request of its own
    return Fit(request)


async def fit_aggregation(engine: Engine, problem: Problem, views: list[str], config: RSAConfig,
                          kind: str, request: Request) -> Fit:
    """`request`, the aggregation of `views` for `problem`, fitted to the context: its budget
    lowered first, then the views cut to their tails (the prompt built again from them)."""

    def build(texts: list[str]) -> Request:
        return request.with_messages(problem.messages(
            aggregation_prompt(problem, texts, config, kind)))

    limit = engine.max_model_len
    if not limit:
        return Fit(request)
    asked = request.max_tokens
    want = asked or max(256, limit // 4)
    floor = min(want, max(256, want // 4))
    bound = engine.prompt_tokens_bound(request)
    if bound is not None and bound + want <= limit:  # fits for sure: no need to count
        return Fit(request)
    used = await engine.prompt_tokens(request)
    if used + want <= limit:
        return Fit(_budget(request, asked and min(asked, limit - used)))
    if used + floor <= limit:
        return Fit(_budget(request, limit - used), cut=True)
    frame = await engine.prompt_tokens(build([""] * len(views)))
    per = (limit - floor - frame) // len(views) - 8
    for _ in range(4):  # a tail measured in estimated tokens may still be too long: tighten
        if per < 16:
            break
        request = build([tail(v, per, engine.tokenizer)[0] for v in views])
        used = await engine.prompt_tokens(request)
        if used + floor <= limit:
            return Fit(_budget(request, limit - used), cut=True)
        per = int(per * (limit - floor - frame) / max(1, used - frame)) - 8
    return Fit(None, f"aggregation prompt cannot fit the context of {limit} tokens even with "
                     f"candidates cut to their tails; lower aggregation_size (now {len(views)}) "
                     "or max_tokens, or use view='answer'", cut=True)


def _budget(request: Request, max_tokens: int | None) -> Request:
    request.max_tokens = max_tokens  # the loop built this request for this call alone
    return request
