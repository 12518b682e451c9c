"""The one interface every source of generations implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ..busy import BusyClock
from ..types import Completion, Request, Tokenizer

#: chat-template tokens allowed per message on top of its text when counts are estimated
TEMPLATE_OVERHEAD = 32


class EngineError(RuntimeError):
    """No request can succeed (bad or missing credentials, unknown model): the run stops.

    Engines raise it instead of returning failed completions when retrying or going on would
    only repeat the same failure for every request.  The message is one line saying what to fix.
    """


class Engine(ABC):
    """Turns requests into completions.

    `generate` returns, for each request, a list of `request.n` completions.  A call that fails
    for good is returned as a `Completion` with `error` set, never raised, so one failure does
    not sink a population (only `EngineError` stops a run).  Engines that batch a whole step
    into one call (offline vLLM) set `prefers_lockstep`; engines that can return several samples
    per request set `supports_n`.
    """

    name: str = "engine"
    supports_n: bool = False
    prefers_lockstep: bool = False
    #: context length in tokens, when known: the loop then fits requests into it
    max_model_len: int | None = None
    tokenizer: Tokenizer | None = None
    #: when requests are inside the engine, for engines that keep track (`rsa_plugins.busy`)
    busy_clock: BusyClock | None = None
    #: the most stop strings the engine's provider takes (None: no limit)
    max_stop: int | None = None

    @abstractmethod
    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        """Completions for every request, in order."""

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` (the engine's tokenizer, else about 4 characters a token)."""
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text))
        return len(text) // 4 + 1

    async def prompt_tokens(self, request: Request) -> int:
        """Tokens the prompt of `request` takes, chat template and prefill included.

        The default adds `TEMPLATE_OVERHEAD` per message to `count_tokens`; engines that can
        ask the server or render the template count exactly.
        """
        return sum(self.count_tokens(m["content"]) + TEMPLATE_OVERHEAD for m in request.messages)

    def prompt_tokens_bound(self, request: Request) -> int | None:
        """A cheap upper bound of `prompt_tokens` (None: none known).  When the bound already
        fits the context, the loop skips the exact count; budgets reserve it (else the
        prompt's bytes).  It must never be below the true count."""
        return None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars that many tokens cost on this engine's model (None: not priced)."""
        return None

    def aggregation_request(self, base: Request, parents: Sequence[Completion]) -> Request | None:
        """The engine's own aggregation call, for engines that build one from the parents'
        outputs (DSPy calls its aggregation predictor with them): `base` holds the problem's
        chat and the sampling settings.  None (the default): the loop builds the aggregation
        prompt and fits it to the context."""
        return None

    async def prepare(self) -> None:
        """Called once before a run, on the run's event loop (e.g. to learn `max_model_len`)."""

    def stop_sent(self, stop: Sequence[str]) -> list[str]:
        """The stop strings a request with `stop` really sends (the first `max_stop`)."""
        return list(stop if self.max_stop is None else stop[: self.max_stop])

    def describe(self) -> dict[str, object]:
        """What goes into traces and framework logs about this engine (never secrets)."""
        return {"engine": self.name}

    def stats(self) -> dict[str, Any]:
        """Running figures (the engine-busy fraction, cache hits...) for traces and framework
        results; empty when the engine keeps none."""
        return {}

    async def aclose(self) -> None:
        """Release clients and connections."""
