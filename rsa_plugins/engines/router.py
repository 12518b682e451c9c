"""The Router path of `LiteLLMEngine` over the direct HTTP transport.

`litellm.Router.acompletion` costs milliseconds of CPU per call, which caps a client at a few
hundred generations a second: less than a few GPUs serving a small model produce.  Here the
Router keeps deciding which of a model group's deployments may serve (its cooldowns, allowed
fails and health checks: `Router.select(kind="healthy")`, asked at most every `REFRESH` seconds
and after a failure), every failure that counts against a deployment is reported to it
(`Router.health().record_failure`, which cools the deployment down once it is over its allowed
fails), and the engine's retries pick again among the deployments still healthy.  Among those,
requests that share a key (one problem's, whose prompts share a long prefix) go to one
deployment while any of them is in flight, where the prefix is cached; other requests go to the
deployment with the fewest in flight (`Placement`).  The Router's own choice of strategy
(least-busy, latency, usage), deployment weights and rate limits are not consulted on this path.

Needs a Router with ``select`` and ``health`` (LiteLLM's Rust-core Router) and deployments that
are OpenAI-compatible servers with an ``api_base``; otherwise the engine keeps
`Router.acompletion`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..types import Request
from .errors import EmptyCompletion, HTTPStatusError, is_retryable, status_of
from .http import OpenAIServer
from .placement import Placement


class RouterTransport:
    """Sends a model group's requests straight to its deployments (`complete`, like
    `OpenAIServer`'s), with the Router's health decisions and its cooldowns kept."""

    #: seconds a list of healthy deployments is reused (asking the Router costs milliseconds)
    REFRESH = 0.5

    def __init__(self, router: Any, group: str, servers: dict[str, OpenAIServer]) -> None:
        self.router, self.group = router, group
        self.ids = list(servers)
        self.servers = servers
        self.placement = Placement(len(self.ids))
        self._index = {d: i for i, d in enumerate(self.ids)}
        self._healthy: list[int] = list(range(len(self.ids)))
        self._fetched = -math.inf
        #: failures reported to the Router, and how many of them cooled a deployment down
        self.failures_reported = 0
        self.cooldowns = 0

    @classmethod
    def create(cls, router: Any, group: str, timeout: float,
               compatible: set[str]) -> RouterTransport | None:
        """The transport for `group`, or None where this Router or group cannot go direct."""
        import litellm

        if not (callable(getattr(router, "select", None)) and
                callable(getattr(router, "health", None))):
            return None
        registry = getattr(router, "registry", None)
        try:
            deployments = registry().all() if callable(registry) else router.model_list
        except Exception:  # noqa: BLE001 - an unknown Router layout: stay on acompletion
            return None
        servers: dict[str, OpenAIServer] = {}
        for d in deployments or []:
            if d.get("model_name") != group:
                continue
            params = d.get("litellm_params") or {}
            try:
                name, provider, key, base = litellm.get_llm_provider(
                    params.get("model", ""), api_base=params.get("api_base"))
            except Exception:  # noqa: BLE001 - not a model LiteLLM can place
                return None
            ident = (d.get("model_info") or {}).get("id")
            if provider not in compatible or not base or not ident:
                return None
            servers[str(ident)] = OpenAIServer(base, name, params.get("api_key") or key, timeout)
        return cls(router, group, servers) if servers else None

    async def _allowed(self) -> list[int]:
        """Deployments the Router lets serve now (reused for `REFRESH` seconds)."""
        now = time.monotonic()
        if now - self._fetched > self.REFRESH:
            self._fetched = now  # the others use the last list while this one asks
            picks = await self.router.select(self.group, {}, kind="healthy")
            ids = [str((d.get("model_info") or {}).get("id")) for d in picks or []]
            self._healthy = [self._index[i] for i in ids if i in self._index]
        return self._healthy

    async def complete(self, kwargs: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        """One chat completion on a healthy deployment; a failure that counts is reported."""
        allowed = await self._allowed()
        if not allowed:
            raise HTTPStatusError(503, f"no healthy deployment in model group {self.group!r} "
                                  "(all cooling down)")
        rank = self.placement.pick(key, allowed)
        try:
            return await self.servers[self.ids[rank]].complete(kwargs)
        except Exception as exc:
            self._report(self.ids[rank], exc)
            raise
        finally:
            self.placement.done(rank, key)

    def _report(self, deployment: str, exc: BaseException) -> None:
        """Count a failure against `deployment` as the Router would have (server errors, rate
        limits, timeouts, dropped connections; not a bad request)."""
        status = status_of(exc)
        if status is not None and status < 500 and status != 429:
            return  # the request's fault, not the deployment's
        if status is None and (isinstance(exc, (EmptyCompletion, ValueError))
                               or not is_retryable(exc)):
            return  # an odd answer, not a failing deployment
        self.failures_reported += 1
        try:
            cooled = self.router.health().record_failure(deployment, exc, status or 500)
        except Exception:  # noqa: BLE001 - bookkeeping must not turn into the call's error
            return
        if cooled:
            self.cooldowns += 1
            self._fetched = -math.inf  # ask again: it is out

    async def context_length(self) -> int | None:
        """The smallest context any deployment reports (vLLM's ``/v1/models``)."""
        lengths = [n for s in self.servers.values() if (n := await s.context_length())]
        return min(lengths) if lengths else None

    async def count(self, request: Request) -> int | None:
        """Exact prompt tokens from a deployment's ``/tokenize`` (all serve one model)."""
        return await self.servers[self.ids[0]].count(request)

    def stats(self) -> dict[str, Any]:
        """Requests placed on each deployment (by its api_base) and failures reported."""
        return {"deployments": [{"api_base": self.servers[d].base, "placed": p}
                                for d, p in zip(self.ids, self.placement.placed)],
                "failures_reported": self.failures_reported, "cooldowns": self.cooldowns}

    async def aclose(self) -> None:
        for server in self.servers.values():
            await server.aclose()
