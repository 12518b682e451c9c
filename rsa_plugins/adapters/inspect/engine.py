"""`InspectEngine`: RSA's generations through the task's Inspect model."""

from __future__ import annotations

from collections.abc import Sequence

from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageUser,
    ContentReasoning,
    GenerateConfig,
    Model,
    ModelOutput,
    get_model,
)
from inspect_ai.util import LimitExceededError, collect

from ...engines.base import Engine
from ...engines.errors import FatalAPIError, describe_error, fatal_reason, redact, status_of
from ...seeds import derive_seed
from ...types import Completion, Message, Request

#: the finish reason of an output that ran out of context (a failed completion)
MODEL_LENGTH = "model_length"


class InspectEngine(Engine):
    """Generates through an Inspect :class:`~inspect_ai.model.Model`.

    The loop hands it one step's requests at a time (``prefers_lockstep``; one problem per
    solver call); they run concurrently with :func:`~inspect_ai.util.collect`.  Each request
    becomes one ``model.generate`` call with its own seed; Inspect's choice comes back as the
    completion's `native`.  A call that fails is returned as a failed completion; an output that
    ran out of context (``stop_reason="model_length"``, which Inspect's vLLM provider also
    reports for over-long prompts) is returned as failed too (finish reason `MODEL_LENGTH`), so
    it never becomes a candidate.  Limit errors propagate, so Inspect stops the sample and
    scores its latest output.
    """

    name = "inspect"
    prefers_lockstep = True

    def __init__(self, model: Model | None = None, max_model_len: int | None = None) -> None:
        self.model = model or get_model()
        self.max_model_len = max_model_len

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        return await collect(*(self._generate_one(r) for r in requests))

    async def _generate_one(self, request: Request) -> list[Completion]:
        outs: list[Completion] = []
        for i in range(request.n):  # n is 1 here (no supports_n); honoured for the contract
            config = GenerateConfig(seed=derive_seed(request.seed, i) if i else request.seed,
                                    temperature=request.temperature, top_p=request.top_p,
                                    max_tokens=request.max_tokens,
                                    stop_seqs=list(request.stop) or None)
            try:
                output = await self.model.generate(chat_messages(request.messages), config=config)
            except LimitExceededError:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed call must not sink the population
                status = status_of(exc)
                if fatal_reason(exc, status):  # every other call would get the same
                    raise FatalAPIError(f"{self.model}: {redact(describe_error(exc))} (HTTP "
                                        f"{status}: check the model's API key, access and "
                                        "name)") from exc
                outs.append(Completion(error=redact(describe_error(exc))))
                continue
            outs.append(self._completion(output))
        return outs

    def _completion(self, output: ModelOutput) -> Completion:
        usage = output.usage
        tokens = dict(prompt_tokens=usage.input_tokens if usage else 0,
                      completion_tokens=usage.output_tokens if usage else 0)
        if output.error or not output.choices:
            return Completion(error=output.error or "the model returned no choices", **tokens)
        choice = output.choices[0]
        if choice.stop_reason == "model_length":
            return Completion(error=f"model_length: {output.completion[:200]}",
                              finish_reason=MODEL_LENGTH, **tokens)
        content = choice.message.content
        reasoning = [c.reasoning for c in content if isinstance(c, ContentReasoning)] \
            if isinstance(content, list) else []
        return Completion(
            text=choice.message.text, reasoning="\n".join(reasoning) or None,
            finish_reason="length" if choice.stop_reason == "max_tokens" else choice.stop_reason,
            native=choice, **tokens)

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "model": str(self.model)}


def chat_messages(messages: list[Message]) -> list[ChatMessage]:
    """RSA's chat as Inspect messages (a last assistant message is a prefill)."""
    types = {"system": ChatMessageSystem, "user": ChatMessageUser,
             "assistant": ChatMessageAssistant}
    return [types[m["role"]](content=m["content"]) for m in messages]

