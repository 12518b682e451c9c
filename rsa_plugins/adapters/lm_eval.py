"""lm-evaluation-harness models ``rsa-vllm`` and ``rsa-litellm``.

    lm_eval --model rsa-vllm \\
        --model_args pretrained=Qwen/Qwen3-4B,population=16,aggregation_size=4,steps=10 \\
        --tasks rsa_aime25 --include_path tasks/lm_eval
    lm_eval --model rsa-litellm --model_args model=openai/gpt-4o-mini,population=8 --tasks gsm8k

Only generative requests (``generate_until``) are changed: each becomes a `Problem`, the RSA
loop runs them (one engine batch per step for vLLM), and the chosen candidate comes back as an
`RSAOutput`: a `str` that also carries the final population, so population-aware task metrics
(`rsa_plugins.adapters.lm_eval_metrics`) can report mean population accuracy, majority accuracy
and pass@N.  ``rsa-vllm`` inherits log-likelihood scoring from lm-eval's ``vllm`` model;
``rsa-litellm`` refuses it with a clear error.

lm-eval 0.4.13 has no plugin discovery for ``--model``, so the names are registered by
`register`: called by the start-up hook right after ``lm_eval.models`` is imported
(`rsa_plugins._hooks`), by the ``rsa-lm-eval`` console script, or by you before
``lm_eval.simple_evaluate``.  Newer lm-eval versions also find them through the
``lm_eval.models`` entry points.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import RSAConfig
from ..engines.base import Engine
from ..loop import RSA
from ..metrics import summarize
from ..types import Completion, Problem, Request, RSAResult

logger = logging.getLogger("rsa_plugins.lm_eval")

#: model name -> lazy "module:Class" target (the module is imported only when the name is used)
MODELS = {
    "rsa-vllm": "rsa_plugins.adapters.lm_eval_vllm:RSAVLLM",
    "rsa-litellm": "rsa_plugins.adapters.lm_eval:RSALiteLLM",
}
#: model_args that belong to the adapter rather than to RSAConfig or the engine
ADAPTER_ARGS = ("trace", "resume", "progress")
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RSAConfig))


def register(module: Any = None) -> None:
    """Add ``rsa-vllm`` and ``rsa-litellm`` to lm-eval's model registry (idempotent).

    ``lm_eval.models`` is imported first: lm-eval fills its built-in names only when the
    registry is empty, so registering into an empty registry would hide ``hf``, ``vllm``, ...
    Names that are already registered (by an entry point, or by you) are left alone.
    """
    del module  # the hook passes the freshly imported lm_eval.models
    import lm_eval.models  # noqa: F401  (registers the built-in names)
    from lm_eval.api.registry import model_registry

    for name, target in MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


def main(argv: Sequence[str] | None = None) -> None:
    """``rsa-lm-eval``: the ``lm_eval`` command with the RSA models registered."""
    register()
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


# ------------------------------------------------------------------ outputs


class RSAOutput(str):
    """The chosen candidate's text, carrying what RSA knows about the request.

    Attributes: ``population`` (final candidate texts, failed ones as ""), ``answers`` (their
    extracted answers), ``chosen`` (index of the returned one, None if all failed),
    ``answer``, ``votes``, ``steps`` (per-step metrics), ``usage`` and ``failed``.
    lm-eval's sample log writes the plain text; task code reads the attributes.
    """

    population: list[str]
    answers: list[Any]
    chosen: int | None
    answer: Any
    votes: dict[str, int]
    steps: list[dict[str, Any]]
    usage: dict[str, int]
    failed: bool

    def __new__(cls, text: str, **attributes: Any) -> RSAOutput:
        obj = super().__new__(cls, text)
        obj.__dict__.update(attributes)
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # lm-eval's --use_cache pickles outputs
        return (_rebuild_output, (str(self), dict(self.__dict__)))

    @classmethod
    def from_result(cls, result: RSAResult) -> RSAOutput:
        usage = dataclasses.asdict(result.usage)
        return cls(result.text if result.chosen is not None else "",
                   population=[c.completion.text if c.completion.ok else "" for c in result.population],
                   answers=[c.answer for c in result.population], chosen=result.chosen,
                   answer=result.answer, votes=dict(result.votes), steps=list(result.steps),
                   usage=usage, failed=result.failed)


def _rebuild_output(text: str, attributes: dict[str, Any]) -> RSAOutput:
    return RSAOutput(text, **attributes)


# ------------------------------------------------------------------ options


@dataclasses.dataclass
class RSAOptions:
    """RSA model_args of one lm-eval model: the config plus which fields the user set."""

    config: RSAConfig
    explicit: frozenset[str]
    trace: str | None = None
    resume: bool = True
    progress: bool | None = None

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any], defaults: dict[str, Any] | None = None) -> RSAOptions:
        """Take the RSA keys out of `kwargs` (``population`` or ``rsa_population`` ...).

        Raises `ConfigError` naming the parameter when a value is out of range, so bad
        model_args fail before any model loads.
        """
        given: dict[str, Any] = {}
        adapter: dict[str, Any] = {}
        for key in list(kwargs):
            name = key[4:] if key.startswith("rsa_") else key
            if name in _CONFIG_FIELDS:
                given[name] = kwargs.pop(key)
            elif name in ADAPTER_ARGS:
                adapter[name] = kwargs.pop(key)
        if "sampling" in given and not isinstance(given["sampling"], dict):
            from ..config import ConfigError

            raise ConfigError(f"sampling must be a dict such as {{'top_k': 20}}, got {given['sampling']!r}")
        config = RSAConfig(**{**(defaults or {}), **given})
        trace = adapter.get("trace")
        return cls(config, frozenset(given), str(trace) if trace else None,
                   bool(adapter.get("resume", True)), adapter.get("progress"))


@dataclasses.dataclass
class _Group:
    """Requests that share generation settings (usually: one task)."""

    gen_kwargs: dict[str, Any]
    indices: list[int] = dataclasses.field(default_factory=list)


class RSAGenerateMixin:
    """What ``rsa-vllm`` and ``rsa-litellm`` share: requests -> problems -> RSA -> outputs."""

    rsa: RSAOptions
    _chat_memo: dict[str, list[dict[str, str]]]
    _max_gen_toks: int
    _rsa_warned: set[str]
    _rsa_steps: list[list[dict[str, Any]]]
    _rsa_engine_info: dict[str, Any]

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any],
                            additional_config: dict[str, Any] | None = None) -> Any:
        """As lm-eval's, except that model_args win over the CLI's batch_size/device."""
        extra = {k: v for k, v in (additional_config or {}).items()
                 if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str,
                               additional_config: dict[str, Any] | None = None) -> Any:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def _init_rsa(self, options: RSAOptions) -> None:
        self.rsa = options
        self._chat_memo = {}
        self._rsa_warned = set()
        self._rsa_steps = []
        self._rsa_engine_info = {}
        self._rsa_runs: list[dict[str, Any]] = []

    # subclasses provide this
    def _rsa_prepare(self, config: RSAConfig, until: list[str]) -> tuple[Engine, RSAConfig]:
        """The engine for one group of requests (and the config, adjusted if need be)."""
        raise NotImplementedError

    # ------------------------------------------------------------ lm-eval API

    def _remember_chat(self, rendered: str, chat_history: list[dict[str, str]]) -> str:
        self._chat_memo[rendered] = [dict(m) for m in chat_history]
        return rendered

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Run RSA on every request; one RSA run per distinct set of generation settings."""
        if not requests:
            return []
        problems = [self._problem(r) for r in requests]
        groups: dict[str, _Group] = {}
        for i, req in enumerate(requests):
            kw = req.args[1] if len(req.args) > 1 else {}
            key = json.dumps(kw, sort_keys=True, default=str)
            groups.setdefault(key, _Group(dict(kw))).indices.append(i)
        outputs: list[str | None] = [None] * len(requests)
        failures: list[str] = []
        for g, group in enumerate(groups.values()):
            config, until = self._group_config(group.gen_kwargs, [requests[i] for i in group.indices])
            engine, config = self._rsa_prepare(config, until)
            progress = self.rsa.progress if self.rsa.progress is not None else not disable_tqdm
            rsa = RSA(engine, config, trace=_trace_path(self.rsa.trace, g), resume=self.rsa.resume,
                      progress=progress, run_info={"lm_eval_model": type(self).__name__})
            results = _run(rsa.run([problems[i] for i in group.indices]), engine)
            for i, result in zip(group.indices, results):
                out = RSAOutput.from_result(result)
                if result.failed:
                    failures.append(f"{problems[i].id}: {_errors(result)}")
                    logger.warning("RSA failed for %s: %s", problems[i].id, _errors(result))
                outputs[i] = out
                self._rsa_steps.append(result.steps)
                hook = getattr(self, "cache_hook", None)
                if hook is not None:
                    hook.add_partial("generate_until", requests[i].args, out)
            self._rsa_runs.append({
                "tasks": sorted({str(requests[i].task_name) for i in group.indices}),
                "requests": len(group.indices), "stop": until, "config": config.to_dict()})
            self._rsa_engine_info = {**engine.describe(), **_engine_counters(engine)}
        if failures and len(failures) == len(requests):
            raise RuntimeError(f"RSA failed for every request ({len(failures)}); first: {failures[0]}")
        return [o if o is not None else "" for o in outputs]

    def get_model_info(self) -> dict[str, Any]:
        """The RSA configuration and per-step averages, for ``results["config"]``."""
        base: dict[str, Any] = {}
        parent = getattr(super(), "get_model_info", None)
        if callable(parent):
            base = dict(parent())
        info: dict[str, Any] = {"config": self.rsa.config.to_dict(),
                                "explicit": sorted(self.rsa.explicit),
                                "trace": self.rsa.trace, "runs": self._rsa_runs,
                                **self._rsa_engine_info}
        if self._rsa_steps:
            info["steps"] = summarize(self._rsa_steps)
        return {**base, "rsa": info}

    # ------------------------------------------------------------ helpers

    def _problem(self, req: Any) -> Problem:
        ctx = req.args[0]
        chat = self._chat_memo.get(ctx)
        system, prefix, prompt = None, [], ctx
        if chat:
            systems = [m["content"] for m in chat if m.get("role") == "system"]
            turns = [m for m in chat if m.get("role") != "system"]
            system = "\n\n".join(systems) or None
            if turns and turns[-1].get("role") == "user":
                prompt, prefix = turns[-1]["content"], turns[:-1]
        if not str(prompt).strip():
            prompt = ctx if str(ctx).strip() else "(empty prompt)"
        pid = f"{req.task_name}/{req.doc_id}" if req.task_name is not None else f"request-{req.idx}"
        return Problem(prompt=prompt, id=pid, system=system,
                       metadata={"lm_eval_context": ctx, "chat": chat is not None,
                                 "prefix": prefix, "task": req.task_name, "doc_id": req.doc_id})

    def _group_config(self, gen_kwargs: dict[str, Any], reqs: list[Any]) -> tuple[RSAConfig, list[str]]:
        """RSA config for one group: the task's sampling, unless the model_args say otherwise."""
        from lm_eval.models.utils import normalize_gen_kwargs

        kw = dict(normalize_gen_kwargs(gen_kwargs, default_max_gen_toks=self._max_gen_toks))
        until = [s for s in kw.pop("until", []) if s]
        max_gen = int(kw.pop("max_gen_toks"))
        do_sample = bool(kw.pop("do_sample", False))
        temperature = float(kw.pop("temperature", 0.0) or 0.0)
        top_p = kw.pop("top_p", None)
        for key in ("n", "seed", "best_of"):  # RSA decides these
            kw.pop(key, None)
        cfg, explicit = self.rsa.config, self.rsa.explicit
        changes: dict[str, Any] = {}
        if "temperature" not in explicit:
            if do_sample and temperature > 0:
                changes["temperature"] = temperature
            else:
                tasks = sorted({str(r.task_name) for r in reqs})
                self._warn_once(
                    "greedy:" + ",".join(tasks),
                    f"task(s) {', '.join(tasks)} decode greedily (do_sample=False or "
                    f"temperature=0), which would make every RSA candidate identical: sampling "
                    f"at temperature={cfg.temperature} instead. Set temperature=... in "
                    "--model_args to choose another value.")
        if "top_p" not in explicit and do_sample and top_p is not None:
            changes["top_p"] = float(top_p)
        if "max_tokens" not in explicit:
            changes["max_tokens"] = max_gen
        if kw:
            changes["sampling"] = {**kw, **cfg.sampling}
        return (cfg.replace(**changes) if changes else cfg), until

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._rsa_warned:
            self._rsa_warned.add(key)
            logger.warning(message)


def _trace_path(trace: str | None, group: int) -> str | None:
    """The trace file of the `group`-th RSA run (``run.jsonl``, ``run.1.jsonl``, ...)."""
    if not trace or group == 0:
        return trace
    p = Path(trace)
    return str(p.with_name(f"{p.stem}.{group}{p.suffix}"))


def _errors(result: RSAResult) -> str:
    errors = sorted({c.completion.error for c in result.population if c.completion.error})
    return "; ".join(errors) or "no candidates"


def _run(coro: Any, engine: Engine) -> list[RSAResult]:
    """Run the loop: on the shared background loop for network engines (their async clients
    stay valid between calls), in this thread for in-process vLLM."""
    import asyncio

    from .._runner import run_sync

    if engine.prefers_lockstep and not _loop_running():
        return asyncio.run(coro)
    return run_sync(coro)


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _engine_counters(engine: Engine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in ("calls", "generate_seconds"):
        if hasattr(engine, attr):
            out[f"engine_{attr}"] = getattr(engine, attr)
    return out


# ------------------------------------------------------------------ rsa-litellm


class _FewShotTurns(Engine):
    """Puts a problem's few-shot chat turns (``--fewshot_as_multiturn``) back before its
    last user message, then delegates to the real engine."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.supports_n, self.prefers_lockstep = inner.supports_n, inner.prefers_lockstep
        self.max_model_len, self.tokenizer = inner.max_model_len, inner.tokenizer

    async def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        return await self.inner.generate([_with_prefix(r) for r in requests])

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _with_prefix(req: Request) -> Request:
    prefix = req.problem.metadata.get("prefix") if req.problem is not None else None
    if not prefix:
        return req
    system = [m for m in req.messages if m["role"] == "system"]
    rest = [m for m in req.messages if m["role"] != "system"]
    return dataclasses.replace(req, messages=[*system, *prefix, *rest])


def _lm_base() -> type:
    from lm_eval.api.model import LM

    return LM


class RSALiteLLM(RSAGenerateMixin, _lm_base()):  # type: ignore[misc]
    """``rsa-litellm``: RSA over any LiteLLM model (hosted APIs, vLLM / SGLang servers, ...).

    model_args: ``model`` (a LiteLLM model string), ``api_base`` (or ``base_url``),
    ``api_key``, ``timeout``, ``max_retries``, ``use_n``, ``max_model_len`` (lets RSA fit
    aggregation prompts), ``max_gen_toks`` (used when a task sets none), the RSA parameters
    (``population``, ``aggregation_size``, ``steps``, ``selection``, ``seed``, ``temperature``,
    ``top_p``, ``view``, ``concurrency``, ...; an ``rsa_`` prefix is accepted too) and
    ``trace``.  Anything else is passed to ``litellm.acompletion``.
    """

    def __init__(self, model: str | None = None, api_base: str | None = None,
                 base_url: str | None = None, api_key: str | None = None,
                 max_gen_toks: int = 2048, timeout: float = 600.0, max_retries: int = 6,
                 use_n: bool | None = None, max_model_len: int | None = None,
                 batch_size: Any = None, max_batch_size: Any = None, device: Any = None,
                 **kwargs: Any) -> None:
        del batch_size, max_batch_size, device  # set by the CLI; concurrency replaces them
        options = RSAOptions.pop_from(kwargs)
        super().__init__()
        if not model:
            raise ValueError("rsa-litellm needs model=<LiteLLM model string>, e.g. "
                             "--model_args model=openai/gpt-4o-mini or "
                             "model=hosted_vllm/NAME,api_base=http://HOST:PORT/v1")
        self._init_rsa(options)
        self._max_gen_toks = int(max_gen_toks)
        if api_key:
            logging.getLogger(__name__).warning(
                "rsa-litellm: api_key was given in --model_args, which lm-eval prints and writes "
                "into its results files; set the provider's environment variable instead "
                "(e.g. OPENAI_API_KEY, HOSTED_VLLM_API_KEY)")
        from ..engines.litellm import LiteLLMEngine

        self.engine = LiteLLMEngine(
            str(model), api_base=api_base or base_url, api_key=api_key,
            concurrency=options.config.concurrency, timeout=float(timeout),
            max_retries=int(max_retries), use_n=use_n,
            max_model_len=int(max_model_len) if max_model_len else None, **kwargs)
        self.model_name = str(model)

    def _rsa_prepare(self, config: RSAConfig, until: list[str]) -> tuple[Engine, RSAConfig]:
        if until:  # OpenAI-style APIs take at most 4 stop strings; servers know their own EOS
            config = config.replace(sampling={**config.sampling, "stop": until[:4]})
        return _FewShotTurns(self.engine), config

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        """The messages as JSON (like lm-eval's API models); RSA reads them back."""
        return self._remember_chat(json.dumps(chat_history, ensure_ascii=False), chat_history)

    @property
    def tokenizer_name(self) -> str:
        return self.model_name.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str:
        return ""

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError(_no_loglikelihood(requests))

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError(_no_loglikelihood(requests))


def _no_loglikelihood(requests: list[Any]) -> str:
    tasks = sorted({str(getattr(r, "task_name", "?")) for r in requests})
    return (f"rsa-litellm runs generative tasks only, but {', '.join(tasks)} score(s) "
            "log-likelihoods (multiple-choice or perplexity tasks), which RSA does not apply "
            "to and chat APIs do not return. Use a generative variant (for example "
            "gpqa_diamond_cot_zeroshot instead of gpqa_diamond_zeroshot), or --model rsa-vllm, "
            "which scores log-likelihoods with plain vLLM.")


if __name__ == "__main__":
    main()
