"""``dspy.RSA``: Recursive Self-Aggregation as a ``dspy.Module``.

    >>> import dspy
    >>> rsa = dspy.RSA("question -> answer", population=8, aggregation_size=3, steps=4)
    >>> pred = rsa(question="What is 17 * 23?")
    >>> pred.answer, len(pred.completions), pred.rsa.steps[-1]["majority_share"]

The module owns two predictors that optimizers see and tune: ``generate`` (a ``ChainOfThought``
over the signature, or the user's own module) and ``aggregate`` (the same outputs, with the
problem's inputs plus ``candidate_solutions``).  The RSA loop itself is the core's
`rsa_plugins.loop.RSALoop`, over a `DSPyEngine` whose generations are calls of those two
predictors.  Diversity comes from a distinct ``rollout_id`` per call (derived from the active
LM's own ``rollout_id``) plus the temperature, so DSPy's cache cannot collapse samples and
optimizer rounds differ.  Predictors are never copied per sample, so optimizer traces map back
to them, and calls run in this module's own thread pool (or concurrently with ``acall``), so
``track_usage`` totals stay correct.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dspy

from ..._background import run_sync
from ...config import RSAConfig
from ...loop import RSALoop
from ...prompts import COMBINE, REFINE
from ...types import Problem, RSAResult
from ...validate import ConfigError, check_int, check_not_misspelled
from ._compat import is_default_instructions
from .engine import CANDIDATES_FIELD, DSPyEngine, Predictors, render_fields, vote_key

__all__ = ["RSA", "RSAPrediction", "vote_key", "AGGREGATION_INSTRUCTIONS", "REFINE_INSTRUCTIONS"]

#: aggregator instructions (K > 1): the core's aggregation request in DSPy's terms; optimizable
AGGREGATION_INSTRUCTIONS = (
    f"You are given a problem and several candidate solutions to it, written independently. "
    f"{COMBINE} Fill in every output field for your improved solution."
)
#: aggregator instructions for K = 1 (self-refinement)
REFINE_INSTRUCTIONS = (
    f"You are given a problem and one candidate solution to it. {REFINE} Fill in every output "
    "field for your improved solution."
)
logger = logging.getLogger(__name__)
#: RSA's own keyword arguments (any other goes to the inner predictors: a near miss is refused)
OWN_OPTIONS = ("population", "aggregation_size", "steps", "selection", "answer_field",
               "reasoning", "signature", "seed", "temperature", "top_p", "max_tokens", "kind",
               "num_threads", "aggregation_instructions", "early_stop", "early_stop_patience",
               "early_stop_confidence", "budget_generations", "budget_tokens", "budget_usd",
               "islands")


class RSAPrediction(dspy.Prediction):
    """A `dspy.Prediction` with the chosen candidate's fields; ``.completions`` is the final
    population (failed members have ``None`` fields) and ``.rsa`` the core's `RSAResult`
    (per-step metrics in ``.rsa.steps``, ``.rsa.votes``, ``.rsa.chosen``, ``.rsa.usage``,
    lineage in ``.rsa.population``).  When every member failed, the fields are ``None`` and
    ``.rsa.failed`` is True."""

    @property
    def rsa(self) -> RSAResult | None:
        return self.__dict__.get("_rsa")


def _base_signature(module: dspy.Module, signature: Any) -> type[dspy.Signature]:
    if signature is not None:
        return dspy.ensure_signature(signature)
    own = getattr(module, "signature", None)
    if own is not None:
        return dspy.ensure_signature(own)
    predictors = module.named_predictors()
    if not predictors:
        raise ConfigError("signature_or_module: the module has no predictors; pass signature=")
    return predictors[-1][1].signature


class _Single(dspy.Module):
    """One `dspy.Predict` as ``.predict``: the shape of ``dspy.ChainOfThought``."""

    def __init__(self, signature: type[dspy.Signature], **config: Any) -> None:
        super().__init__()
        self.predict = dspy.Predict(signature, **config)

    def forward(self, **kwargs: Any) -> dspy.Prediction:
        return self.predict(**kwargs)

    async def aforward(self, **kwargs: Any) -> dspy.Prediction:
        return await self.predict.acall(**kwargs)


class RSA(dspy.Module):
    """Recursive Self-Aggregation (arXiv 2509.26626) over any signature or module.

    Args:
        signature_or_module: a signature (``"question -> answer"`` or a `dspy.Signature`) or a
            `dspy.Module` used as the generator (its output fields come from `signature`, its
            ``.signature`` or its last predictor).
        population: N, candidates per step (>= 1).
        aggregation_size: K, candidates shown to each aggregation call (1 <= K <= N; K=1 is
            self-refinement).
        steps: T, population states including the first (>= 1): T=1 is parallel sampling, each
            further step is one aggregation round.  One call costs N x T LM calls.
        selection: ``"majority"`` (vote on `answer_field`) or ``"random"`` (the paper's pass@1).
        answer_field: output field to vote on; default ``answer`` if present, else the last one.
        reasoning: add a ``reasoning`` output (ChainOfThought) unless the signature has one.
        seed: varies subsets and rollout ids; temperature/top_p/max_tokens: per-call sampling
            (max_tokens None keeps the LM's own).  kind: answer equivalence for the vote
            (``general``, ``math``, ``multiple_choice``, ``code``...).
        num_threads: parallel calls (default: dspy's ``num_threads`` / ``async_max_workers``).
        aggregation_instructions: replaces the default aggregation instructions.
        early_stop, early_stop_patience, early_stop_confidence: end a call's run once its
            answers agree ("never": the paper; "unanimous"; "consensus"), see
            docs/spending-less.md.  budget_generations, budget_tokens, budget_usd: the most one
            call may spend.  islands: M islands that merge pairwise.
        **config: passed to the inner predictors (like ``dspy.Predict(sig, **config)``).

    Hyperparameters are constructor arguments, not saved state: ``save``/``load`` carry the
    predictors' demos and instructions, so a small RSA can be optimized and loaded into a big one.
    """

    def __init__(self, signature_or_module: Any, population: int = RSAConfig.population,
                 aggregation_size: int = RSAConfig.aggregation_size,
                 steps: int = RSAConfig.steps, *, selection: str = RSAConfig.selection,
                 answer_field: str | None = None,
                 reasoning: bool = True, signature: Any = None, seed: int = 0,
                 temperature: float = 1.0, top_p: float | None = None,
                 max_tokens: int | None = None, kind: str = "general",
                 num_threads: int | None = None, aggregation_instructions: str | None = None,
                 early_stop: str = RSAConfig.early_stop,
                 early_stop_patience: int = RSAConfig.early_stop_patience,
                 early_stop_confidence: float = RSAConfig.early_stop_confidence,
                 budget_generations: int | None = None, budget_tokens: int | None = None,
                 budget_usd: float | None = None, islands: int = RSAConfig.islands,
                 **config: Any) -> None:
        super().__init__()
        check_not_misspelled("option", config, OWN_OPTIONS)
        if kind == "auto":
            raise ConfigError("kind must be a task kind (general, math, multiple_choice, code, "
                              "reasoning_gym), not 'auto', for DSPy")
        self.config = RSAConfig(population=population, aggregation_size=aggregation_size,
                                steps=steps, selection=selection, seed=seed,
                                temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                kind=kind, early_stop=early_stop,
                                early_stop_patience=early_stop_patience,
                                early_stop_confidence=early_stop_confidence,
                                budget_generations=budget_generations,
                                budget_tokens=budget_tokens, budget_usd=budget_usd,
                                islands=islands)
        if num_threads is not None:
            num_threads = check_int("num_threads", num_threads, 1)
        self.num_threads = num_threads

        self._signature_from_last_predictor = False
        if isinstance(signature_or_module, dspy.Module):
            base = _base_signature(signature_or_module, signature)
            self._signature_from_last_predictor = signature is None and \
                getattr(signature_or_module, "signature", None) is None
            self.generate = signature_or_module
            self.wrapped = True
        elif isinstance(signature_or_module, str) or (
                isinstance(signature_or_module, type) and issubclass(signature_or_module, dspy.Signature)):
            if signature is not None:
                raise ConfigError("signature is only used with a module as signature_or_module")
            try:
                base = dspy.ensure_signature(signature_or_module)
            except Exception as exc:
                raise ConfigError(f"signature_or_module: not a valid signature "
                                  f"({signature_or_module!r}): {exc}") from exc
            self.generate = self._predictor(base, reasoning, config)
            self.wrapped = False
        else:
            raise ConfigError("signature_or_module must be a signature string, a dspy.Signature "
                              f"class or a dspy.Module, got {type(signature_or_module).__name__}")
        if not base.output_fields:
            raise ConfigError("signature_or_module: the signature has no output fields")
        self._check_budgets()
        if CANDIDATES_FIELD in base.input_fields:
            raise ConfigError(f"signature_or_module: the input field name {CANDIDATES_FIELD!r} "
                              "is reserved for the aggregation predictor")
        self.signature = base
        outputs = [k for k in base.output_fields if k != "reasoning"] or list(base.output_fields)
        if answer_field is None:
            answer_field = "answer" if "answer" in outputs else outputs[-1]
        elif answer_field not in base.output_fields:
            raise ConfigError(f"answer_field must be one of the output fields "
                              f"({', '.join(base.output_fields)}), got {answer_field!r}")
        self.answer_field = answer_field

        agg = base.append(CANDIDATES_FIELD, dspy.InputField(
            desc="candidate solutions to the problem, numbered; some may be wrong"), type_=str)
        text = aggregation_instructions or (
            REFINE_INSTRUCTIONS if self.config.aggregation_size == 1 else AGGREGATION_INSTRUCTIONS)
        if aggregation_instructions is None and base.instructions.strip() and \
                not is_default_instructions(base):
            text = f"The task: {base.instructions.strip()}\n\n{text}"
        self.aggregate = self._predictor(agg.with_instructions(text), reasoning, config)
        #: the fields a population member carries (reasoning first, when there is one)
        self.output_names = list(self.aggregate.predict.signature.output_fields)

    def _check_budgets(self) -> None:
        """Token and dollar budgets need every call's prompt and length bounded."""
        c = self.config
        if c.budget_tokens is None and c.budget_usd is None:
            return
        name = "budget_tokens" if c.budget_tokens is not None else "budget_usd"
        if self.wrapped:
            raise ConfigError(f"{name} needs a signature as signature_or_module: RSA cannot "
                              "bound what your own module's calls cost; use budget_generations")
        if c.max_tokens is None:
            raise ConfigError(f"{name} needs max_tokens, to bound what one call may cost")

    @staticmethod
    def _predictor(sig: type[dspy.Signature], reasoning: bool, config: dict[str, Any]) -> dspy.Module:
        """A module whose one predictor is ``.predict``, however it is built, so RSA's predictors
        are always ``generate.predict`` and ``aggregate.predict`` (saved state moves between
        RSAs built from a signature or from a ChainOfThought)."""
        if reasoning and "reasoning" not in sig.output_fields:
            return dspy.ChainOfThought(sig, **config)
        return _Single(sig, **config)

    # ------------------------------------------------------------------ running

    def forward(self, **kwargs: Any) -> RSAPrediction:
        inputs = self._inputs(kwargs)
        workers = min(self.num_threads or dspy.settings.num_threads or 8, self.config.population)
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="rsa-dspy") as pool:
            # the loop runs on the background event loop, in a copy of this thread's context,
            # so the caller's dspy.context (lm, trace, usage tracking) reaches every call
            result = run_sync(self._run(DSPyEngine(self._predictors(), inputs, pool=pool),
                                        inputs))
        return self._prediction(result)

    async def aforward(self, **kwargs: Any) -> RSAPrediction:
        inputs = self._inputs(kwargs)
        limit = self.num_threads or dspy.settings.async_max_workers or 8
        engine = DSPyEngine(self._predictors(), inputs, semaphore=asyncio.Semaphore(limit))
        return self._prediction(await self._run(engine, inputs))

    async def _run(self, engine: DSPyEngine, inputs: dict[str, Any]) -> RSAResult:
        prompt = render_fields(inputs) or "(no inputs)"
        problem = Problem(prompt=prompt, kind=self.config.kind)
        [result] = await RSALoop(engine, self.config, progress=False).run([problem])
        return result

    def _inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        fields = self.signature.input_fields
        unknown = [k for k in kwargs if k not in fields]
        if unknown and not self.wrapped:
            raise TypeError(f"RSA got unexpected input field(s) {unknown}; the signature's "
                            f"inputs are {list(fields)}")
        missing = [k for k, f in fields.items() if k not in kwargs and f.is_required()]
        if missing and self.wrapped and self._signature_from_last_predictor:
            raise TypeError(
                f"RSA is missing input field(s) {missing}: without signature=, RSA reads the "
                "problem's fields from the module's last predictor, whose inputs are "
                f"{list(fields)}. Pass the module's own inputs and outputs, e.g. "
                f"RSA(module, signature=\"{', '.join(kwargs) or 'question'} -> "
                f"{', '.join(k for k in self.signature.output_fields if k != 'reasoning')}\")")
        if missing:
            raise TypeError(f"RSA is missing input field(s) {missing}")
        return dict(kwargs)

    # ------------------------------------------------------------------ translating

    def _predictors(self) -> Predictors:
        return Predictors(self.generate, self.aggregate, self.output_names, self.answer_field,
                          self.wrapped)

    def _prediction(self, result: RSAResult) -> RSAPrediction:
        members = []
        for cand in result.population:
            got = cand.completion.native if isinstance(cand.completion.native, dict) else {}
            members.append({k: got.get(k) for k in self.output_names})
        if result.chosen is None:
            errors = sorted({c.completion.error for c in result.population if c.completion.error})
            logger.warning("RSA: every candidate of the last step (%d of %d) failed; the output "
                           "fields are None (pred.rsa.failed). First error: %s",
                           len(result.steps), self.config.steps, errors[0] if errors else "no answer")
        pred = RSAPrediction(**(members[result.chosen] if result.chosen is not None
                                else dict.fromkeys(self.output_names)))
        pred._completions = dspy.Completions(members, signature=self.signature)
        pred._rsa = result
        return pred

    def __repr__(self) -> str:
        c = self.config
        return (f"RSA(population={c.population}, aggregation_size={c.aggregation_size}, "
                f"steps={c.steps}, selection={c.selection!r},\n  generate={self.generate!r},\n"
                f"  aggregate={self.aggregate!r})")
