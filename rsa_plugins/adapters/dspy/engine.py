"""`DSPyEngine`: RSA's generations as calls of a `dspy.RSA` module's own predictors.

A population member is a prediction's output fields: they come back with the completion as its
`Completion.native` (a dict), are shown to the aggregator as ``name: value`` lines, and the
module reads the chosen member's fields back from it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dspy

from ...engines.base import TEMPLATE_OVERHEAD, Engine, EngineError
from ...engines.providers import model_prices
from ...seeds import derive_seed
from ...types import Completion, Request
from ._compat import serialize_for_json

#: the aggregation predictor's input field holding the K candidates
CANDIDATES_FIELD = "candidate_solutions"
#: DSPy's errors that every other call would repeat (missing or rejected credentials, unknown
#: model, billing): the run stops with the first one instead of failing N x T times
FATAL = tuple(c for c in (getattr(dspy.utils.exceptions, n, None) for n in (
    "LMConfigurationError", "LMAuthError", "LMBillingError", "LMUnsupportedModelError"))
    if isinstance(c, type))


def vote_key(value: Any) -> str | None:
    """What the majority vote compares: a string as is, anything else as canonical JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return json.dumps(serialize_for_json(value), sort_keys=True, ensure_ascii=False)


def render_value(value: Any) -> str:
    """A field's value as text (strings as they are, anything else as JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(serialize_for_json(value), ensure_ascii=False)


def render_fields(values: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {render_value(v)}" for k, v in values.items())


@dataclass
class Predictors:
    """What the engine calls: the module's two predictors and the fields a member carries."""

    generate: Any  # a dspy.Module
    aggregate: Any  # a dspy.Module
    output_names: list[str]
    answer_field: str
    wrapped: bool  # `generate` is the user's own module (sampling reaches it through the adapter)


@dataclass
class AggregationRequest(Request):
    """An aggregation call: the K parents' rendered fields for ``candidate_solutions``."""

    candidates: list[str] = field(default_factory=list)


class DSPyEngine(Engine):
    """Generations from an `RSA` module's predictors, for one problem's `inputs`: a first-step
    request calls ``generate`` with them; an aggregation request (`aggregation_request`, built
    from the K parents' fields) calls ``aggregate`` with them plus the candidates.

    Sync mode runs each call in `pool` (a thread pool of the module's own, so usage tracking and
    optimizer traces stay shared); async mode awaits ``acall`` under `semaphore`.  Each call
    gets its own ``rollout_id`` (derived from the request seed and the LM's own ``rollout_id``)
    and the request's temperature, so DSPy's cache cannot collapse samples.
    """

    name = "dspy"

    def __init__(self, predictors: Predictors, inputs: dict[str, Any], *,
                 pool: ThreadPoolExecutor | None = None,
                 semaphore: asyncio.Semaphore | None = None) -> None:
        self.predictors, self.inputs, self.pool, self.semaphore = predictors, inputs, pool, semaphore

    def aggregation_request(self, base: Request, parents: Sequence[Completion]) -> Request:
        """The aggregation call of `parents`: their output fields as candidates."""
        shown = [render_fields(c.native) if isinstance(c.native, dict) and c.native else c.text
                 for c in parents]
        return AggregationRequest(**vars(base), candidates=shown)

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def prompt_tokens_bound(self, request: Request) -> int | None:
        """Bytes of the messages DSPy's adapter builds for the call (demos and field
        instructions included), twice over when a ChatAdapter may retry with the JSONAdapter
        (that second call's `max_tokens` too).  None for the user's own module, whose calls
        RSA cannot see (the module refuses token and dollar budgets then)."""
        aggregation = isinstance(request, AggregationRequest)
        target = self.predictors.aggregate if aggregation else self.predictors.generate
        predictors = [p for _, p in target.named_predictors()]
        if len(predictors) != 1 or (self.predictors.wrapped and not aggregation):
            return None
        inputs = {**self.inputs, CANDIDATES_FIELD: request.candidates} if aggregation \
            else self.inputs
        adapter = dspy.settings.adapter or dspy.ChatAdapter()
        adapters = [adapter, dspy.JSONAdapter()] \
            if getattr(adapter, "use_json_adapter_fallback", False) else [adapter]
        sig, demos = predictors[0].signature, predictors[0].demos
        size = sum(len(str(m.get("content") or "").encode()) + TEMPLATE_OVERHEAD
                   for a in adapters for m in a.format(sig, demos, inputs))
        return size + (len(adapters) - 1) * (request.max_tokens or 0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars from LiteLLM's cost map for the model of the LM the calls use."""
        pinned = [p.lm for _, p in self.predictors.generate.named_predictors() if p.lm]
        lm = pinned[0] if pinned else dspy.settings.lm
        model = str(getattr(lm, "model", "") or "")
        known = self.__dict__.setdefault("_prices", {})
        if model not in known:
            known[model] = model_prices(model) if model else None
        prices = known[model]
        if prices is None:
            return None
        return prompt_tokens * prices[0] + completion_tokens * prices[1]

    async def _one(self, req: Request) -> list[Completion]:
        call = self._call(req)
        if self.pool is not None:
            ctx = contextvars.copy_context()  # the caller's DSPy settings (dspy.context)
            loop = asyncio.get_running_loop()
            pred, err, usage = await loop.run_in_executor(self.pool, ctx.run, _tracked, call)
        else:
            assert self.semaphore is not None
            async with self.semaphore:
                pred, err, usage = await _atracked(call)
        prompt = sum(int(u.get("prompt_tokens") or 0) for u in usage.values())
        completion = sum(int(u.get("completion_tokens") or 0) for u in usage.values())
        if isinstance(err, FATAL):
            raise EngineError(str(err).strip().splitlines()[0]) from err
        if err is not None:
            msg = f"{type(err).__name__}: {err}"
            return [Completion(error=msg[:2000], prompt_tokens=prompt,
                               completion_tokens=completion)]
        return [self._completion(pred, prompt, completion)]

    def _completion(self, pred: Any, prompt_tokens: int, completion_tokens: int) -> Completion:
        """A prediction of either predictor as a population member (its fields kept)."""
        names, answer = self.predictors.output_names, self.predictors.answer_field
        values = {k: pred[k] for k in names if k in pred}
        if answer not in values:
            return Completion(error=f"the prediction has no field {answer!r}",
                              prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        reasoning = values.get("reasoning")
        return Completion(text=render_fields(values),
                          reasoning=reasoning if isinstance(reasoning, str) else None,
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          finish_reason="stop", answer=vote_key(values[answer]), native=values)

    def _call(self, req: Request) -> _Call:
        """The predictor call that serves `req`, with its sampling settings."""
        predictors, inputs = self.predictors, dict(self.inputs)
        aggregation = isinstance(req, AggregationRequest)
        target = predictors.aggregate if aggregation else predictors.generate
        pinned = [p.lm for _, p in target.named_predictors() if p.lm is not None]
        lm = pinned[0] if pinned else dspy.settings.lm
        base = (getattr(lm, "kwargs", None) or {}).get("rollout_id")
        sampling: dict[str, Any] = {
            "rollout_id": req.seed if base is None else derive_seed("dspy-rsa", base, req.seed),
            "temperature": req.temperature,
        }
        if req.top_p is not None:
            sampling["top_p"] = req.top_p
        if req.max_tokens is not None:
            sampling["max_tokens"] = req.max_tokens
        if aggregation:
            inputs[CANDIDATES_FIELD] = req.candidates
        if aggregation or not predictors.wrapped:
            return _Call(target, {**inputs, "config": sampling}, None)
        return _Call(target, inputs, sampling)


class _SamplingAdapter:
    """Wraps the active adapter and adds per-call LM kwargs (rollout_id, temperature...) to every
    predictor call inside a user module, pinned LMs included (the `Refine` trick, by delegation
    so the wrapped adapter keeps its settings)."""

    def __init__(self, inner: Any, extra: dict[str, Any]) -> None:
        self.inner, self.extra = inner, extra

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: Any,
                 inputs: Any) -> Any:
        return self.inner(lm, {**lm_kwargs, **self.extra}, signature, demos, inputs)

    async def acall(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: Any,
                    inputs: Any) -> Any:
        return await self.inner.acall(lm, {**lm_kwargs, **self.extra}, signature, demos, inputs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class _Call:
    """One predictor call, runnable sync (`run`) or async (`arun`)."""

    target: Any  # a dspy.Module
    kwargs: dict[str, Any]
    adapter_extra: dict[str, Any] | None  # set for user modules (no `config=` reaches them)

    def _adapter(self) -> Any:
        return _SamplingAdapter(dspy.settings.adapter or dspy.ChatAdapter(), self.adapter_extra or {})

    def run(self) -> Any:
        if self.adapter_extra is None:
            return self.target(**self.kwargs)
        with dspy.context(adapter=self._adapter()):
            return self.target(**self.kwargs)

    async def arun(self) -> Any:
        if self.adapter_extra is None:
            return await self.target.acall(**self.kwargs)
        with dspy.context(adapter=self._adapter()):
            if hasattr(self.target, "aforward"):
                return await self.target.acall(**self.kwargs)
            return await asyncio.to_thread(self.target, **self.kwargs)  # context copied


def _tracked(call: _Call) -> tuple[Any, BaseException | None, dict[str, Any]]:
    with dspy.track_usage() as tracker:  # nested: rolls up into the caller's tracker
        try:
            return call.run(), None, tracker.get_total_tokens()
        except Exception as exc:  # noqa: BLE001 - a failed generation is a failed candidate
            return None, exc, tracker.get_total_tokens()


async def _atracked(call: _Call) -> tuple[Any, BaseException | None, dict[str, Any]]:
    with dspy.track_usage() as tracker:
        try:
            return await call.arun(), None, tracker.get_total_tokens()
        except Exception as exc:  # noqa: BLE001
            return None, exc, tracker.get_total_tokens()
