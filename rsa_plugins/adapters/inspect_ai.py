"""Inspect AI adapter: the ``rsa`` solver.

``inspect eval TASK --solver rsa -S population=16 -S aggregation_size=4 -S steps=10`` runs
Recursive Self-Aggregation on every sample of any task.  The solver turns the sample into a
:class:`~rsa_plugins.types.Problem`, runs :class:`~rsa_plugins.loop.RSA` on an :class:`InspectEngine`
that generates through the task's model (``get_model().generate``, so Inspect's connection limits,
usage accounting, token/cost limits, retries and transcript all apply) and writes the chosen
candidate back as ``state.output`` (marking ``state.choices`` for multiple-choice tasks).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inspect_ai.log import transcript
from inspect_ai.model import (
    ChatCompletionChoice,
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
from inspect_ai.scorer import (
    CORRECT,
    INCORRECT,
    NOANSWER,
    Score,
    Scorer,
    Target,
    accuracy,
    scorer,
    stderr,
)
from inspect_ai.solver import Generate, Solver, TaskState, solver
from inspect_ai.util import LimitExceededError, StoreModel, collect, span

from ..answers import detect_kind, equivalent, extract, vote
from ..config import ConfigError, RSAConfig, _int
from ..engines.base import Engine
from ..loop import RSA, derive_seed
from ..prompts import KIND_TEXT
from ..types import Candidate, Completion, Problem, Request, RSAResult

__all__ = ["PRESETS", "InspectEngine", "RSASolverError", "RSAStore", "answer_match", "rsa",
           "sample_problem"]

logger = logging.getLogger(__name__)

#: ``preset`` values: "auto" detects the kind (multiple choice when the sample has choices);
#: "none" keeps the prompt as it is; the others name a task kind (see ``prompts.KIND_TEXT``).
PRESETS = ("auto", "none", "math", "multiple_choice", "general", "reasoning_gym", "code")

STEP_SPAN_TYPE = "rsa_step"


def _registry_name(name: str) -> str:
    """``name`` for ``@solver``/``@scorer`` such that Inspect registers ``rsa_plugins/<name>``.

    Inspect prefixes the package name only when it can tell that the package is installed; an
    editable install run from the source tree (where setuptools leaves ``rsa_plugins.egg-info``
    without PEP 610 data) would otherwise register the bare name, shadowing other packages.
    """
    try:
        from inspect_ai._util.registry import registry_name
    except ImportError:  # pragma: no cover - private API moved
        return name
    return name if "/" in registry_name(_registry_name, name) else f"rsa_plugins/{name}"


try:  # Inspect's CLI prints this error type as a plain message, without a traceback
    from inspect_ai._util.error import PrerequisiteError as _Prerequisite
except ImportError:  # pragma: no cover - private API moved
    _Prerequisite = Exception  # type: ignore[misc,assignment]


class RSASolverError(ConfigError, _Prerequisite):
    """A bad ``rsa`` solver argument (a :class:`~rsa_plugins.ConfigError`, i.e. a ``ValueError``)."""

    def __init__(self, message: str) -> None:
        ConfigError.__init__(self, message)
        self.message = message


class RSAStore(StoreModel):
    """What RSA leaves in each sample's store (``state.store_as(RSAStore)``)."""

    answer: str | None = None
    chosen: int | None = None
    selection: str = "majority"
    votes: dict[str, int] = {}
    steps: list[dict[str, Any]] = []
    population: list[dict[str, Any]] = []
    model_length: int = 0
    config: dict[str, Any] = {}


@dataclass
class _InspectCompletion(Completion):
    """A completion that keeps Inspect's own choice (stop reason, reasoning content)."""

    choice: ChatCompletionChoice | None = None


class InspectEngine(Engine):
    """Generates through an Inspect :class:`~inspect_ai.model.Model`.

    The loop hands it one step's requests at a time (``prefers_lockstep``; one problem per
    solver call); they run concurrently with :func:`~inspect_ai.util.collect` inside a transcript
    span named ``step t`` that stays open until :meth:`end_step`.  Each request becomes one
    ``model.generate`` call with its own seed.  A call that fails is returned as a failed
    completion; an output that ran out of context (``stop_reason="model_length"``, which Inspect's
    vLLM provider also reports for over-long prompts) is counted in ``model_length`` and returned
    as failed too, so it never becomes a candidate.  Limit errors propagate, so Inspect stops the
    sample and scores its latest output.
    """

    name = "inspect"
    prefers_lockstep = True

    def __init__(self, model: Model | None = None, max_model_len: int | None = None) -> None:
        self.model = model or get_model()
        self.max_model_len = max_model_len
        self.model_length = 0
        self._span: Any = None

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        if requests and self._span is None:
            self._span = span(f"step {requests[0].step}", type=STEP_SPAN_TYPE)
            await self._span.__aenter__()
        try:
            return await collect(*(self._generate_one(r) for r in requests))
        except BaseException:
            await self.end_step()
            raise

    async def end_step(self) -> None:
        """Close the current step's transcript span (if one is open)."""
        if self._span is not None:
            cm, self._span = self._span, None
            await cm.__aexit__(None, None, None)

    async def _generate_one(self, request: Request) -> list[Completion]:
        outs: list[Completion] = []
        for i in range(request.n):  # n is 1 here (no supports_n); honoured for the contract
            config = GenerateConfig(seed=derive_seed(request.seed, i) if i else request.seed,
                                    temperature=request.temperature, top_p=request.top_p,
                                    max_tokens=request.max_tokens)
            try:
                output = await self.model.generate(_chat(request.messages), config=config)
            except LimitExceededError:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed call must not sink the population
                outs.append(Completion(error=f"{type(exc).__name__}: {exc}"))
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
            self.model_length += 1
            return Completion(error=f"model_length: {output.completion[:200]}",
                              finish_reason="model_length", **tokens)
        content = choice.message.content
        reasoning = [c.reasoning for c in content if isinstance(c, ContentReasoning)] \
            if isinstance(content, list) else []
        return _InspectCompletion(
            text=choice.message.text, reasoning="\n".join(reasoning) or None,
            finish_reason="length" if choice.stop_reason == "max_tokens" else choice.stop_reason,
            choice=choice, **tokens)

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "model": str(self.model)}


def _chat(messages: list[dict[str, str]]) -> list[ChatMessage]:
    kinds = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


# ---------------------------------------------------------------------------------------- solver


@solver(name=_registry_name("rsa"))
def rsa(
    population: int = 16,
    aggregation_size: int = 4,
    steps: int = 10,
    selection: str = "majority",
    seed: int | None = None,
    preset: str = "auto",
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    view: str = "full",
    tail_tokens: int = 4096,
    include_reasoning: bool = False,
    template: str | None = None,
    max_model_len: int | None = None,
) -> Solver:
    """Recursive Self-Aggregation (arXiv 2509.26626) as a solver.

    Replaces the task's solver chain: N samples of the prompt, then T-1 rounds in which each of
    N calls aggregates K distinct members of the previous population; the answer is the
    majority (or a random member) of the last population.  Costs N x T model calls per sample.

    Args:
        population: N, candidates per step (>= 1).
        aggregation_size: K, candidates shown to each aggregation call (1 <= K <= N).
        steps: T, population states including the first (>= 1; T=1 is parallel sampling).
        selection: "majority" or "random" pick from the final population.
        seed: seed of subset draws and per-call generation seeds (default: the eval's
            ``--seed``, else 0).  Every call gets its own seed, so caching or a global seed
            does not collapse the population.
        preset: answer-format instruction added to the prompt (the task's own prompt template
            is gone once ``--solver`` replaces its chain): "auto" (multiple choice when the
            sample has choices, else detected from the prompt, else "general"), "none", "math",
            "multiple_choice", "general", "reasoning_gym" or "code".
        temperature: sampling temperature (default: the eval's, else 1.0; a temperature of 0
            from the task is raised to 1.0 with a warning since RSA needs diverse samples).
        top_p: nucleus sampling (default: the eval's).
        max_tokens: generation budget per call (default: the eval's ``--max-tokens``).
        view: how candidates appear in aggregation prompts: "full", "answer" or "tail".
        tail_tokens: tokens kept per candidate with view="tail".
        include_reasoning: show candidates' reasoning content in aggregation prompts.
        template: aggregation prompt template with ``{problem}`` and ``{candidates}``.
        max_model_len: the model's context length; when given, aggregation prompts are fitted
            into it (budget lowered, candidates cut to their tails).
    """
    options = dict(population=population, aggregation_size=aggregation_size, steps=steps,
                   selection=selection, seed=seed, temperature=temperature, top_p=top_p,
                   max_tokens=max_tokens, view=view, tail_tokens=tail_tokens,
                   include_reasoning=include_reasoning, template=template)
    try:
        base, context = _validate(options, preset, max_model_len)
    except ConfigError as exc:
        raise RSASolverError(f"Invalid argument to the rsa solver: {exc}") from None

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        config = _resolve(base, explicit=options)
        problem = sample_problem(state, preset)
        engine = InspectEngine(max_model_len=context)
        store = state.store_as(RSAStore)
        store.config = {**config.to_dict(), "preset": preset}
        store.selection = config.selection

        async def on_step(p: Problem, t: int, metrics: dict[str, Any],
                          pop: list[Candidate]) -> None:
            step_overflow = engine.model_length - store.model_length
            metrics = {**metrics, "model_length": step_overflow}
            transcript().info(metrics, source="rsa")
            await engine.end_step()
            store.steps = [*store.steps, metrics]
            store.model_length = engine.model_length
            idx = _current_pick(config, p, problem.kind, pop)
            if idx is not None:
                _set_output(state, engine, pop[idx], problem)

        try:
            [result] = await RSA(engine, config, progress=False, on_step=on_step).run([problem])
        finally:
            await engine.end_step()
        _finish(state, store, engine, result)
        return state

    return solve


def _validate(options: dict[str, Any], preset: Any,
              max_model_len: Any) -> tuple[RSAConfig, int | None]:
    """Check every ``-S`` value up front (they arrive YAML-typed and unchecked)."""
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    if not isinstance(options["include_reasoning"], bool):
        raise ConfigError("include_reasoning must be true or false, got "
                          f"{options['include_reasoning']!r}")
    context = None if max_model_len is None else _int("max_model_len", max_model_len, 64)
    kind = preset if preset not in ("auto", "none") else "auto"
    return RSAConfig(kind=kind, **{k: v for k, v in options.items() if v is not None}), context


def _resolve(base: RSAConfig, explicit: dict[str, Any]) -> RSAConfig:
    """Fill what ``-S`` left open from the eval's generate config (``--seed``, ``--temperature``...)."""
    try:
        from inspect_ai.model._generate_config import active_generate_config

        active = active_generate_config()
    except (ImportError, LookupError):  # private API: fall back to RSAConfig's defaults
        active = GenerateConfig()
    changes: dict[str, Any] = {}
    if explicit["seed"] is None and active.seed is not None:
        changes["seed"] = abs(int(active.seed))
    if explicit["temperature"] is None and active.temperature is not None:
        if active.temperature > 0:
            changes["temperature"] = active.temperature
        else:
            logger.warning("rsa: the eval asks for temperature 0, which would make every "
                           "candidate identical; sampling at 1.0 (set -S temperature= to override)")
    if explicit["top_p"] is None and active.top_p is not None:
        changes["top_p"] = active.top_p
    if explicit["max_tokens"] is None:
        changes["max_tokens"] = active.max_tokens
    return base.replace(**changes) if changes else base


def sample_problem(state: TaskState, preset: str = "auto") -> Problem:
    """The :class:`Problem` for a sample: its user prompt plus the preset's answer format.

    With ``preset="auto"`` the kind is multiple choice when the sample has choices, else the
    sample metadata's ``rsa_kind`` (tasks can say "math"), else detected from the prompt.
    Multiple-choice samples (``state.choices``) list their options as ``A) ...`` lines and ask
    for ``ANSWER: X``.  Other prompts get an instruction to end with the kind's answer format
    unless the prompt already names it (or ``preset="none"``).
    """
    prompt = state.user_prompt.text
    choices = [c.value for c in state.choices] if len(state.choices) else None
    system = "\n\n".join(m.text for m in state.messages if m.role == "system") or None
    if preset == "auto":
        hinted = (state.metadata or {}).get("rsa_kind")
        kind = "multiple_choice" if choices else hinted if hinted in KIND_TEXT else detect_kind(prompt)
    elif preset == "none":
        kind = detect_kind(prompt, choices)
    else:
        kind = preset
    if preset != "none":
        if kind == "multiple_choice" and choices:
            options = "\n".join(f"{chr(65 + i)}) {c}" for i, c in enumerate(choices))
            prompt = f"{prompt}\n\n{options}"
        if not _names_format(prompt, kind):
            prompt = (f"{prompt}\n\nReason step by step, then end your response with "
                      f"{KIND_TEXT[kind][1]}.")
    target = list(state.target.target) if state.target.target else None
    if target and kind == "multiple_choice":
        target = [t.strip().upper() for t in target]
    return Problem(prompt=prompt, id=f"{state.sample_id}-epoch{state.epoch}", target=target,
                   kind=kind, choices=choices, system=system,
                   metadata={"sample_id": state.sample_id, "epoch": state.epoch})


def _names_format(prompt: str, kind: str) -> bool:
    marker = {"math": "\\boxed", "reasoning_gym": "<answer>", "code": "```"}.get(kind, "ANSWER:")
    return marker in prompt


def _current_pick(config: RSAConfig, problem: Problem, kind: str,
                  pop: list[Candidate]) -> int | None:
    """The member of `pop` the final selection rule would pick now (for intermediate outputs)."""
    alive = [i for i, c in enumerate(pop) if c.completion.ok]
    if not alive:
        return None
    idx, _ = vote([pop[i].answer for i in alive], kind)
    if config.selection == "random" or idx is None:
        idx = random.Random(derive_seed(config.seed, problem.id, "final")).randrange(len(alive))
    return alive[idx]


def _set_output(state: TaskState, engine: InspectEngine, cand: Candidate, problem: Problem) -> None:
    """Make `cand` the sample's current answer: output, last message, marked choices."""
    model = str(engine.model)
    comp = cand.completion
    choice = getattr(comp, "choice", None)
    if choice is None:
        choice = ModelOutput.from_content(model=model, content=comp.text).choices[0]
    message = choice.message.model_copy()
    message.metadata = {**(message.metadata or {}), "rsa": {"step": cand.step, "slot": cand.slot,
                                                             "answer": cand.answer}}
    state.output = ModelOutput(model=model, choices=[choice.model_copy(update={"message": message})])
    if state.messages and state.messages[-1].role == "assistant" and \
            (state.messages[-1].metadata or {}).get("rsa") is not None:
        state.messages[-1] = message
    else:
        state.messages.append(message)
    if problem.kind == "multiple_choice" and len(state.choices):
        letter = str(cand.answer).strip().upper() if cand.answer is not None else None
        for i in range(len(state.choices)):
            state.choices.mark_choice(i, letter == chr(65 + i))


def _finish(state: TaskState, store: RSAStore, engine: InspectEngine, result: RSAResult) -> None:
    if result.chosen is not None:
        _set_output(state, engine, result.population[result.chosen], result.problem)
    store.answer = None if result.answer is None else str(result.answer)
    store.chosen = result.chosen
    store.votes = dict(result.votes)
    store.model_length = engine.model_length
    store.population = [
        {"slot": c.slot, "parents": c.parents, "answer": c.answer, "score": c.score,
         "finish_reason": c.completion.finish_reason, "error": c.completion.error,
         "text": c.completion.text}
        for c in result.population
    ]


# ---------------------------------------------------------------------------------------- scorer


@scorer(metrics=[accuracy(), stderr()], name=_registry_name("answer_match"))
def answer_match(kind: str = "math") -> Scorer:
    """Extract the answer of ``state.output`` the way RSA does and compare it with the target.

    ``kind`` picks extraction and equivalence (``math``: last ``\\boxed{}``, else an ``ANSWER:``
    line, else the last number; compared with math-verify).
    """
    if kind not in PRESETS[2:]:
        raise ConfigError(f"kind must be one of {', '.join(PRESETS[2:])}; got {kind!r}")

    async def score(state: TaskState, target: Target) -> Score:
        text = state.output.completion
        answer = extract(text, kind)
        if answer is None:
            return Score(value=NOANSWER if not text else INCORRECT, answer=None, explanation=text)
        right = any(equivalent(answer, t, kind) for t in target.target)
        return Score(value=CORRECT if right else INCORRECT, answer=str(answer), explanation=text)

    return score
