"""An `RSAResult` as LiteLLM's response: the chosen candidate as the message, usage summed over
every call RSA made, and the run (population, votes, per-step metrics) in the provider fields.

``n > 1`` returns the representatives of the n largest answer clusters, largest first (the
first choice is the answer RSA selected); when the final population has fewer clusters than n,
further members of the clusters fill the remaining choices, so there are always n.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ...answers import detect_kind
from ...config import RSAConfig
from ...equivalence import cluster
from ...types import Candidate, RSAResult

#: the key of RSA's record in the message's (or stream chunk's) provider-specific fields
FIELD = "rsa"


def choice_order(result: RSAResult, config: RSAConfig, n: int) -> list[int]:
    """Population indices of the `n` choices: the chosen member, then representatives of the
    next largest clusters of equivalent answers, then other members in cluster order."""
    alive = [i for i, c in enumerate(result.population) if c.completion.ok]
    kind = config.kind if config.kind != "auto" else detect_kind(result.problem.prompt)
    groups = [[alive[j] for j in g] for g in cluster([result.population[i].answer for i in alive],
                                                      kind)]
    groups.sort(key=len, reverse=True)  # stable: equal sizes keep the order they were seen
    groups.append([i for i in alive if result.population[i].answer is None])
    order = [result.chosen] if result.chosen is not None else []
    chosen_group = next((g for g in groups if result.chosen in g), [])
    reps = [g[0] for g in groups if g and g is not chosen_group]
    rest = [i for g in groups for i in g]
    for i in reps + rest:
        if len(order) >= n:
            break
        if i not in order:
            order.append(i)
    return order


def record(result: RSAResult, config: RSAConfig, reasoning_tokens: int) -> dict[str, Any]:
    """The run as JSON-ready data: what the response's provider-specific fields carry."""
    return {
        "applied": True, "answer": result.answer, "chosen": result.chosen,
        "votes": result.votes, "degraded_at": result.degraded_at,
        "stopped": dataclasses.asdict(result.stopped) if result.stopped else None,
        "generations": result.usage.calls, "failed_generations": result.usage.failed,
        "retries": result.usage.retries, "reasoning_tokens": reasoning_tokens,
        "population": [_member(c) for c in result.population], "steps": result.steps,
        "config": config.to_dict(),
    }


def _member(c: Candidate) -> dict[str, Any]:
    comp = c.completion
    return {"slot": c.slot, "step": c.step, "parents": c.parents, "text": comp.text,
            "reasoning": comp.reasoning, "answer": c.answer, "finish_reason": comp.finish_reason,
            "error": comp.error}


def usage(result: RSAResult, reasoning_tokens: int) -> Any:
    """LiteLLM `Usage` summed over every call of the run (reasoning tokens where reported)."""
    import litellm

    u = result.usage
    return litellm.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                         total_tokens=u.total_tokens, reasoning_tokens=reasoning_tokens or None)


def cost(inner: str, result: RSAResult) -> float | None:
    """The run's cost at the inner model's LiteLLM price, when LiteLLM knows one (the proxy's
    spend tracking and budgets then count every call RSA made)."""
    import litellm

    try:
        prompt, completion = litellm.cost_per_token(
            model=inner, prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens)
    except Exception:  # noqa: BLE001 - an unpriced model (a local server): no cost
        return None
    return float(prompt + completion)


def model_response(response: Any, inner: str, result: RSAResult, config: RSAConfig, n: int,
                   reasoning_tokens: int) -> Any:
    """Fill LiteLLM's `ModelResponse` (the one it passed to the provider) with the result."""
    from litellm.types.utils import Choices, Message

    rec = record(result, config, reasoning_tokens)
    choices = []
    for index, i in enumerate(choice_order(result, config, n)):
        cand = result.population[i]
        fields = {FIELD: rec if index == 0 else {"applied": True, "member": i,
                                                 "answer": cand.answer}}
        message = Message(content=cand.completion.text, role="assistant",
                          reasoning_content=cand.completion.reasoning,
                          provider_specific_fields=fields)
        choices.append(Choices(index=index, message=message,
                               finish_reason=cand.completion.finish_reason or "stop"))
    response.choices = choices
    response.model = f"rsa/{inner}"
    response.created = int(time.time())
    response.usage = usage(result, reasoning_tokens)
    price = cost(inner, result)
    if price is not None:
        response._hidden_params["response_cost"] = price
    return response


def mark_passthrough(response: Any, reason: str) -> Any:
    """Say in a passed-through response that RSA did not run, and why."""
    for choice in getattr(response, "choices", None) or []:
        message = getattr(choice, "message", None)
        if message is not None:
            message.provider_specific_fields = {**(message.provider_specific_fields or {}),
                                                FIELD: {"applied": False, "reason": reason}}
    return response
