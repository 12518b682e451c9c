"""One request's RSA run: the core loop over the inner model's `LiteLLMEngine`, watched by an
observer that sums reasoning tokens and reports progress; and the run as a stream of chunks.

A stream sends nothing until the first generation is back (up to `KEEPALIVE` seconds), so a
refused key is still an HTTP error; then a progress chunk after every step and at least every
`KEEPALIVE` seconds (empty content, the progress in the ``rsa_progress`` provider field: a
keep-alive for clients and proxies that drop idle connections), then the answer, then the
finish reason with the usage.  Closing or cancelling the stream cancels the run's pending calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ...engines.errors import REASONS, FatalAPIError, MissingCredentials
from ...engines.litellm import LiteLLMEngine
from ...loop import RSALoop
from ...observers import Observer, StepEvent
from ...types import Candidate, Problem, RSAResult, Stop
from ...validate import ConfigError
from .request import Plan
from .response import FIELD, choice_order, record

#: seconds between keep-alive chunks of a stream (and the most it waits before the first)
KEEPALIVE = 10.0


class Progress(Observer):
    """Counts generations; queues a progress event after each step."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.step_ = total, 0, 0
        self.first = asyncio.Event()
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def generation(self, problem: Problem, cand: Candidate, restored: bool) -> None:
        self.done += 1
        self.first.set()

    def stopped(self, problem: Problem, stop: Stop, remaining: int) -> None:
        self.total -= remaining  # an early stop or the budget ended the run sooner

    async def step(self, event: StepEvent) -> None:
        self.step_ = event.step
        self.events.put_nowait({**self.snapshot(),
                                "distinct_answers": event.metrics["distinct_answers"],
                                "majority_share": event.metrics["majority_share"]})

    def snapshot(self) -> dict[str, Any]:
        return {"step": self.step_, "generations": self.done, "total": self.total}


async def execute(plan: Plan, progress: Progress) -> RSAResult:
    """Run RSA for the plan's problem; LiteLLM's exceptions for what went wrong."""
    try:
        engine = LiteLLMEngine(plan.inner, **plan.options)
    except (ValueError, TypeError) as exc:
        raise error(exc, plan.inner) from None
    try:
        loop = RSALoop(engine, plan.config, progress=False, observers=[progress])
        result = (await loop.run([plan.problem]))[0]  # type: ignore[list-item]
    except (FatalAPIError, ConfigError) as exc:
        raise error(exc, plan.inner) from None
    finally:
        await engine.aclose()
    if result.failed:
        errors = [c.completion.error for c in result.population if c.completion.error]
        first = errors[0] if errors else "no answer"
        raise error(RuntimeError(f"every call to {plan.inner} failed ({first})"), plan.inner)
    return result


def error(exc: BaseException, inner: str) -> Exception:
    """The LiteLLM exception (and so the proxy's HTTP status) for a failure of the run."""
    import httpx
    import litellm

    model, text = f"rsa/{inner}", str(exc)
    if isinstance(exc, MissingCredentials) or REASONS["credentials"] in text:
        return litellm.AuthenticationError(message=text, llm_provider="rsa", model=model)
    if isinstance(exc, FatalAPIError) and REASONS["access"] in text:
        response = httpx.Response(403, request=httpx.Request("POST", "http://rsa.invalid"))
        return litellm.PermissionDeniedError(message=text, llm_provider="rsa", model=model,
                                             response=response)
    if isinstance(exc, FatalAPIError):
        return litellm.NotFoundError(message=text, llm_provider="rsa", model=model)
    if isinstance(exc, (ValueError, TypeError)):
        return litellm.BadRequestError(message=text, model=model, llm_provider="rsa")
    return litellm.ServiceUnavailableError(message=text, llm_provider="rsa", model=model)


def chunk(text: str, fields: dict[str, Any] | None = None, index: int = 0,
          finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    """A LiteLLM ``GenericStreamingChunk``."""
    return {"text": text, "is_finished": finish is not None, "finish_reason": finish or "",
            "usage": usage, "index": index, "tool_use": None, "provider_specific_fields": fields}


async def stream(plan: Plan) -> AsyncIterator[dict[str, Any]]:
    """The run as stream chunks: keep-alive progress, then the answer (see the module doc)."""
    progress = Progress(plan.config.generations_per_problem)
    task = asyncio.ensure_future(execute(plan, progress))
    task.add_done_callback(lambda _: progress.events.put_nowait(None))
    first = asyncio.ensure_future(progress.first.wait())
    try:
        await asyncio.wait({task, first}, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # a refused key or bad settings: raised before anything was sent
        while True:
            try:
                event = await asyncio.wait_for(progress.events.get(), KEEPALIVE)
            except asyncio.TimeoutError:
                event = progress.snapshot()
            if event is None:
                break
            yield chunk("", {"rsa_progress": event})
        result = task.result()
        rec = record(result, plan.config, result.usage.reasoning_tokens)
        order = choice_order(result, plan.config, plan.n)
        for index, i in enumerate(order):
            fields = {FIELD: rec} if index == 0 else None
            yield chunk(result.population[i].completion.text, fields, index)
        u = result.usage
        totals = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                  "total_tokens": u.total_tokens}
        if result.usage.reasoning_tokens:
            totals["reasoning_tokens"] = result.usage.reasoning_tokens
        finish = result.population[order[0]].completion.finish_reason or "stop"
        yield chunk("", None, 0, finish, totals)
    finally:
        first.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
