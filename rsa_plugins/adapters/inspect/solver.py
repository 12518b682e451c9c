"""The ``rsa`` solver: ``inspect eval TASK --solver rsa -S population=16 -S steps=10``.

The solver turns the sample into a `Problem` (`.problem`), runs the RSA loop on an
`InspectEngine` that generates through the task's model (so Inspect's connection limits, usage
accounting, token/cost limits, retries and transcript all apply) and writes the chosen candidate
back as ``state.output`` after every step (so a sample stopped by a limit keeps its best answer).
"""

from __future__ import annotations

import logging
from typing import Any

from inspect_ai.log import transcript
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import Generate, Solver, TaskState, solver
from inspect_ai.util import StoreModel, span

from ...config import RSAConfig
from ...loop import RSALoop
from ...budget import Forecast
from ...observers import Observer, StepEvent
from ...types import Problem, RSAResult, Stop
from ...validate import ConfigError, check_bool, check_choice, check_int, did_you_mean
from ._compat import PrerequisiteError, active_generate_config, qualified_name
from .engine import MODEL_LENGTH, InspectEngine
from .problem import PRESETS, sample_problem, set_output

logger = logging.getLogger(__name__)


class RSASolverError(ConfigError, PrerequisiteError):
    """A bad ``rsa`` solver argument (a :class:`~rsa_plugins.ConfigError`, i.e. a ``ValueError``);
    Inspect's CLI prints it as one line."""

    def __init__(self, message: str) -> None:
        ConfigError.__init__(self, message)
        self.message = message


#: the transcript span type of one RSA step
STEP_SPAN_TYPE = "rsa_step"


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
    stopped: dict[str, Any] | None = None


@solver(name=qualified_name("rsa"))
def rsa(
    population: int = RSAConfig.population,
    aggregation_size: int = RSAConfig.aggregation_size,
    steps: int = RSAConfig.steps,
    selection: str = RSAConfig.selection,
    seed: int | None = None,
    preset: str = "auto",
    system_message: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    view: str = RSAConfig.view,
    tail_tokens: int = RSAConfig.tail_tokens,
    include_reasoning: bool = False,
    template: str | None = None,
    max_model_len: int | None = None,
    early_stop: str = RSAConfig.early_stop,
    early_stop_patience: int = RSAConfig.early_stop_patience,
    early_stop_confidence: float = RSAConfig.early_stop_confidence,
    budget_generations: int | None = None,
    budget_tokens: int | None = None,
    budget_usd: float | None = None,
    islands: int = RSAConfig.islands,
    **unknown: Any,
) -> Solver:
    """Recursive Self-Aggregation (arXiv 2509.26626) as a solver.

    Replaces the task's solver chain: N samples of the prompt, then T-1 rounds in which each of
    N calls aggregates K distinct members of the previous population; the answer is the
    majority (or a random member) of the last population.  Costs N x T model calls per sample.
    Since ``--solver`` replaces the chain, a task's own ``system_message()`` and prompt
    template are not run: pass the system message with ``-S system_message=...`` (or compose
    ``[system_message(...), rsa()]`` in Python), and see `preset` for the answer format.

    Args:
        population: N, candidates per step (>= 1).
        aggregation_size: K, candidates shown to each aggregation call (1 <= K <= N).
        steps: T, population states including the first (>= 1; T=1 is parallel sampling).
        selection: "majority" or "random" pick from the final population.
        seed: seed of subset draws and per-call generation seeds (default: the eval's
            ``--seed``, else 0).  Every call gets its own seed, so caching or a global seed
            does not collapse the population.
        preset: the answer format RSA asks for: "auto" (multiple choice when the sample has
            choices, else the sample's ``rsa_kind`` metadata, else detected from the prompt; no
            format line for samples without a target, i.e. open-ended tasks), "none", or an
            answer kind: "math", "multiple_choice", "general", "reasoning_gym" or "code".
        system_message: a system message for every call (a task's ``system_message()``
            solver is not run under ``--solver``).
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
        early_stop: end the sample's run once its answers agree: "never" (the paper),
            "unanimous" or "consensus" (docs/spending-less.md).
        early_stop_patience: consecutive agreeing steps before stopping.
        early_stop_confidence: posterior probability of the majority for "consensus".
        budget_generations, budget_tokens, budget_usd: the most one sample's run may spend
            (in model calls, tokens, or US dollars where LiteLLM prices the model).
        islands: M islands that draw subsets only from themselves and merge pairwise.
    """
    given = dict(population=population, aggregation_size=aggregation_size, steps=steps,
                 selection=selection, seed=seed, temperature=temperature, top_p=top_p,
                 max_tokens=max_tokens, view=view, tail_tokens=tail_tokens,
                 include_reasoning=include_reasoning, template=template, early_stop=early_stop,
                 early_stop_patience=early_stop_patience,
                 early_stop_confidence=early_stop_confidence,
                 budget_generations=budget_generations, budget_tokens=budget_tokens,
                 budget_usd=budget_usd, islands=islands)
    for name in unknown:  # short enough for one line of Inspect's 80-column error panel
        valid = [*given, "preset", "system_message", "max_model_len"]
        raise RSASolverError(f"Invalid argument to the rsa solver: {name!r}"
                             f"{did_you_mean(name, valid)}")
    #: the arguments left open, which the eval's own generate config fills (`_resolve`)
    open_ = frozenset(k for k in ("seed", "temperature", "top_p", "max_tokens")
                      if given[k] is None)
    try:
        check_choice("preset", preset, PRESETS)
        given["include_reasoning"] = check_bool("include_reasoning", include_reasoning)
        context = None if max_model_len is None else check_int("max_model_len", max_model_len, 64)
        base = RSAConfig(kind=preset if preset not in ("auto", "none") else "auto",
                         **{k: v for k, v in given.items() if v is not None})
    except ConfigError as exc:
        raise RSASolverError(f"Invalid argument to the rsa solver: {exc}") from None

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        config = _resolve(base, open_)
        problem = sample_problem(state, preset, system_message)
        engine = InspectEngine(max_model_len=context)
        store = state.store_as(RSAStore)
        store.config = {**config.to_dict(), "preset": preset}
        store.selection = config.selection
        shown = SampleView(state, store, str(engine.model), config)
        try:
            [result] = await RSALoop(engine, config, progress=False, announce=False,
                                     observers=[shown]).run([problem])
        finally:
            await shown.end_step()
        _finish(state, store, str(engine.model), result)
        return state

    return solve


class SampleView(Observer):
    """What the sample shows while RSA runs, one owner per thing: a transcript span per step
    (opened before the step's calls, closed after its metrics), the step's metrics as an info
    event (with ``model_length``: its generations that ran out of context), and the current
    choice as the sample's output, so a sample stopped by a limit keeps its best answer."""

    def __init__(self, state: TaskState, store: RSAStore, model: str,
                 config: RSAConfig) -> None:
        self.state, self.store, self.model, self.config = state, store, model, config
        self._span: Any = None

    async def begin_step(self, problem: Problem, step: int) -> None:
        await self.end_step()
        self._span = span(f"step {step}", type=STEP_SPAN_TYPE)
        await self._span.__aenter__()

    def start(self, forecast: Forecast) -> None:
        if self.config.spends_less:
            transcript().info({"forecast": forecast.line(self.config)}, source="rsa")

    def stopped(self, problem: Problem, stop: Stop, remaining: int) -> None:
        self.store.stopped = {"step": stop.step, "reason": stop.reason}
        transcript().info({"stopped": self.store.stopped, "generations_saved": remaining},
                          source="rsa")

    async def step(self, event: StepEvent) -> None:
        over = sum(c.completion.finish_reason == MODEL_LENGTH for c in event.generations)
        metrics = {**event.metrics, "model_length": over}
        transcript().info(metrics, source="rsa")
        await self.end_step()
        self.store.steps = [*self.store.steps, metrics]
        self.store.model_length += over
        if event.chosen is not None:
            set_output(self.state, self.model, event.population[event.chosen], event.problem)

    async def end_step(self) -> None:
        """Close the open step span, if any (also when a limit ends the sample mid-step)."""
        if self._span is not None:
            cm, self._span = self._span, None
            await cm.__aexit__(None, None, None)


def _resolve(base: RSAConfig, open_: frozenset[str]) -> RSAConfig:
    """Fill what ``-S`` left `open_` from the eval's generate config (``--seed``,
    ``--temperature``...)."""
    try:
        active = active_generate_config()
    except LookupError:  # outside an eval
        active = GenerateConfig()
    changes: dict[str, Any] = {}
    if "seed" in open_ and active.seed is not None:
        changes["seed"] = abs(int(active.seed))
    if "temperature" in open_ and active.temperature is not None:
        if active.temperature > 0:
            changes["temperature"] = active.temperature
        else:
            logger.warning("rsa: the eval asks for temperature 0, which would make every "
                           "candidate identical; sampling at 1.0 (set -S temperature= to override)")
    if "top_p" in open_ and active.top_p is not None:
        changes["top_p"] = active.top_p
    if "max_tokens" in open_:
        changes["max_tokens"] = active.max_tokens
    return base.replace(**changes) if changes else base


def _finish(state: TaskState, store: RSAStore, model: str, result: RSAResult) -> None:
    if result.chosen is not None:
        set_output(state, model, result.population[result.chosen], result.problem)
    store.answer = None if result.answer is None else str(result.answer)
    store.chosen = result.chosen
    store.votes = dict(result.votes)
    store.population = [
        {"slot": c.slot, "parents": c.parents, "answer": c.answer, "score": c.score,
         "finish_reason": c.completion.finish_reason, "error": c.completion.error,
         "text": c.completion.text}
        for c in result.population
    ]
