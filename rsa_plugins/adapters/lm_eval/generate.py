"""What ``rsa-vllm`` and ``rsa-litellm`` share: lm-eval requests -> problems -> RSA -> outputs.

Each generative request becomes a `Problem` carrying the task's whole chat as lm-eval built it
(system message, few-shot turns, the question, the ``gen_prefix`` as an assistant prefill), or
its plain-text prompt without ``--apply_chat_template``.  Requests are grouped per task (and
generation settings); each group is one run of the RSA loop with the task's stop strings and
token budget, and a trace file of its own.  The chosen candidate comes back as an `RSAOutput`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ...budget import Budget, Cost, Forecast, forecast, left_for, spent_by
from ...config import RSAConfig
from ...engines.base import Engine
from ...loop import RSALoop
from ...metrics import summarize
from ...types import Message, Problem, RSAResult
from ...validate import ConfigError
from .options import RSAOptions
from .outputs import RSAOutput

logger = logging.getLogger("lm_eval.rsa_plugins")

#: key under which the RSA settings are kept in lm-eval's ``--use_cache`` database
CACHE_MARK = "rsa-plugins:settings"


class RSARunError(RuntimeError):
    """Every request of an lm-eval run failed (the message gives the first error)."""


@dataclasses.dataclass
class _Group:
    """Requests of one task that share generation settings: one RSA run."""

    task: str
    gen_kwargs: dict[str, Any]
    indices: list[int] = dataclasses.field(default_factory=list)


class RSAGenerateMixin:
    """Requests -> problems -> the RSA loop -> `RSAOutput`s, for an lm-eval ``LM``."""

    rsa: RSAOptions
    _max_gen_toks: int

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
        from ._compat import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def _init_rsa(self, options: RSAOptions) -> None:
        self.rsa = options
        self._chat_memo: dict[str, list[Message]] = {}
        self._rsa_steps: list[list[dict[str, Any]]] = []
        self._rsa_runs: list[dict[str, Any]] = []
        self._rsa_engine_info: dict[str, Any] = {}

    # subclasses provide these
    def _rsa_engine(self, config: RSAConfig) -> tuple[Engine, RSAConfig]:
        """The engine for one group of requests (and the config, adjusted if need be)."""
        raise NotImplementedError

    def _rsa_run(self, loop: RSALoop, problems: list[Problem]) -> list[RSAResult]:
        """Run the loop to the end (on whichever event loop the engine needs)."""
        raise NotImplementedError

    # ------------------------------------------------------------ lm-eval API

    def _remember_chat(self, rendered: str, chat_history: list[Message]) -> str:
        self._chat_memo[rendered] = [dict(m) for m in chat_history]
        return rendered

    def set_cache_hook(self, cache_hook: Any) -> None:
        """``--use_cache``: refuse a cache database written with other RSA settings (lm-eval
        keys cached answers on the request alone, so they would come back unchanged)."""
        from ._compat import cache_database

        db = cache_database(cache_hook)
        if db is not None:
            mine = {"model": type(self).__name__, "fingerprint": self.rsa.config.fingerprint(),
                    "explicit": sorted(self.rsa.explicit)}
            found = db.get(CACHE_MARK)
            if found != mine and (found is not None or len(db)):
                raise ConfigError(
                    "--use_cache: the cache database holds answers made with other settings "
                    f"({_settings(found)}; now {_settings(mine)}); pass another --use_cache path")
            db[CACHE_MARK] = mine
        super().set_cache_hook(cache_hook)  # type: ignore[misc]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Run RSA on every request: one RSA run per task (and set of generation settings)."""
        if not requests:
            return []
        problems = [self._problem(r) for r in requests]
        groups: dict[tuple[str, str], _Group] = {}
        for i, req in enumerate(requests):
            kw = req.args[1] if len(req.args) > 1 else {}
            key = (str(req.task_name), json.dumps(kw, sort_keys=True, default=str))
            groups.setdefault(key, _Group(key[0], dict(kw))).indices.append(i)
        self._warn_repeats(requests)
        outputs: list[str] = [""] * len(requests)
        failures: list[str] = []
        runs_of_task: Counter[str] = Counter()
        plans = [(g, *self._group_config(g.gen_kwargs, g.task)) for g in groups.values()]
        forecasts = [forecast(engine, config, [problems[i] for i in g.indices])
                     for g, config, engine in plans]
        firsts = [f.first_step for f in forecasts]
        if self.rsa.config.budgeted:  # one budget for the whole lm-eval run: refuse it up front
            Budget(plans[0][1], plans[0][2]).check_first_steps(sum(firsts, Cost()),
                                                               len(problems))
        progress = self.rsa.progress if self.rsa.progress is not None else not disable_tqdm
        # the whole run's worst case (every task), before any call
        print(_whole(forecasts).line(self.rsa.config), file=sys.stderr, flush=True)
        used = Cost()
        for n, (group, config, engine) in enumerate(plans):
            if config.budgeted:  # what earlier tasks used; later tasks' first steps held back
                config = left_for(config, used, sum(firsts[n + 1:], Cost()))
            sent = self._stop_sent(engine, config, group.task)
            loop = RSALoop(engine, config, trace=self._trace(group.task, runs_of_task[group.task]),
                           resume=self.rsa.resume, progress=progress, announce=False,
                           run_info={"lm_eval_model": type(self).__name__, "task": group.task,
                                     "stop_sent": sent})
            runs_of_task[group.task] += 1
            results = self._rsa_run(loop, [problems[i] for i in group.indices])
            for i, result in zip(group.indices, results):
                outputs[i] = out = RSAOutput.from_result(result)
                if result.failed:
                    failures.append(f"{problems[i].id}: {_errors(result)}")
                    logger.warning("RSA failed for %s: %s", problems[i].id, _errors(result))
                self._rsa_steps.append(result.steps)
                hook = getattr(self, "cache_hook", None)
                if hook is not None:
                    hook.add_partial("generate_until", requests[i].args, out)
            used = used + spent_by(engine, results)
            stops = Counter(r.stopped.reason for r in results if r.stopped is not None)
            self._rsa_runs.append({"task": group.task, "requests": len(group.indices),
                                   "config": config.to_dict(),
                                   "generations": sum(r.usage.calls for r in results),
                                   "stopped": dict(stops), "stop_sent": sent})
            self._rsa_engine_info = {**engine.describe(), **_counters(engine)}
        if len(failures) == len(requests):
            raise RSARunError(f"RSA failed for every request ({len(failures)}); first: "
                              f"{failures[0]}")
        return outputs

    def get_model_info(self) -> dict[str, Any]:
        """The RSA configuration and per-step averages, for ``results["config"]``."""
        parent = getattr(super(), "get_model_info", None)
        base: dict[str, Any] = dict(parent()) if callable(parent) else {}
        info: dict[str, Any] = {"config": self.rsa.config.to_dict(),
                                "explicit": sorted(self.rsa.explicit),
                                "trace": self.rsa.trace, "runs": self._rsa_runs,
                                **self._rsa_engine_info}
        if self._rsa_steps:
            info["steps"] = summarize(self._rsa_steps)
        return {**base, "rsa": info}

    # ------------------------------------------------------------ helpers

    def _problem(self, req: Any) -> Problem:
        """The request's problem: lm-eval's chat (memoised when it rendered it), else its text."""
        ctx = str(req.args[0])
        pid = f"{req.task_name}/{req.doc_id}" if req.task_name is not None else f"request-{req.idx}"
        meta = {"task": req.task_name, "doc_id": req.doc_id}
        turns = [m for m in self._chat_memo.get(ctx, []) if m.get("role") != "system"]
        prefill = turns.pop()["content"] if turns and turns[-1].get("role") == "assistant" else None
        if not turns or turns[-1].get("role") != "user" or not turns[-1]["content"].strip():
            return Problem(prompt=ctx if ctx.strip() else "(empty prompt)", id=pid, chat=False,
                           metadata=meta)
        systems = [m["content"] for m in self._chat_memo[ctx] if m.get("role") == "system"]
        return Problem(prompt=turns[-1]["content"], id=pid, system="\n\n".join(systems) or None,
                       fewshot=turns[:-1], prefill=prefill, metadata=meta)

    def _group_config(self, gen_kwargs: dict[str, Any], task: str) -> tuple[RSAConfig, Engine]:
        """RSA config and engine for one task: the task's stop strings and budget at every step,
        its sampling unless the model_args say otherwise (greedy tasks are sampled anyway)."""
        from ._compat import normalize_gen_kwargs

        kw = dict(normalize_gen_kwargs(gen_kwargs, default_max_gen_toks=self._max_gen_toks))
        until = [s for s in kw.pop("until", []) if s]
        max_gen = int(kw.pop("max_gen_toks"))
        do_sample = bool(kw.pop("do_sample", False))
        temperature = float(kw.pop("temperature", 0.0) or 0.0)
        top_p = kw.pop("top_p", None)
        for key in ("n", "seed", "best_of"):  # RSA decides these
            kw.pop(key, None)
        cfg, explicit = self.rsa.config, self.rsa.explicit
        changes: dict[str, Any] = {"stop": tuple(until) if "stop" not in explicit else cfg.stop}
        if "temperature" not in explicit:
            if do_sample and temperature > 0:
                changes["temperature"] = temperature
            else:
                self._warn_once(f"greedy:{task}", (
                    f"task {task} asks to decode greedily (do_sample=False or temperature=0), which "
                    f"would make every RSA candidate identical: sampling at temperature="
                    f"{cfg.temperature} instead. Set temperature=... in --model_args to choose "
                    "another value."))
        if "top_p" not in explicit and do_sample and top_p is not None:
            changes["top_p"] = float(top_p)
        if "max_tokens" not in explicit:
            changes["max_tokens"] = max_gen
        if kw:
            changes["sampling"] = {**kw, **cfg.sampling}
        engine, config = self._rsa_engine(cfg.replace(**changes))
        return config, engine

    def _stop_sent(self, engine: Engine, config: RSAConfig, task: str) -> list[str]:
        """The stop strings requests really carry (a warning when the provider takes fewer)."""
        sent = engine.stop_sent(config.stop)
        if len(sent) < len(config.stop):
            self._warn_once(f"stop:{task}", (
                f"task {task} stops at {len(config.stop)} strings {list(config.stop)}, but this "
                f"provider takes {len(sent)}: requests send {sent} (the results' rsa.runs and "
                "the trace record them)"))
        return sent

    def _warn_repeats(self, requests: list[Any]) -> None:
        """A warning for each task that repeats its documents (RSA runs on every repeat)."""
        cfg = self.rsa.config
        per_doc = Counter((str(r.task_name), r.doc_id) for r in requests)
        repeats: dict[str, int] = {}
        for (task, _), n in per_doc.items():
            repeats[task] = max(repeats.get(task, 1), n)
        for task, n in sorted(repeats.items()):
            if n > 1:
                self._warn_once(f"repeats:{task}", (
                    f"task {task} repeats each document {n} times (repeats: {n}) and RSA runs "
                    f"on every repeat: {n} x N x T = {n * cfg.generations_per_problem} model "
                    "calls per document. RSA already samples N candidates; consider a copy of "
                    "the task with repeats: 1."))

    def _trace(self, task: str, run: int) -> str | None:
        """The trace file of one task: ``run.jsonl`` -> ``run.<task>.jsonl`` (``.<task>.1``...)."""
        if not self.rsa.trace:
            return None
        p = Path(self.rsa.trace)
        name = task.replace("/", "_") + (f".{run}" if run else "")
        return str(p.with_name(f"{p.stem}.{name}{p.suffix}"))

    def _warn_once(self, key: str, message: str) -> None:
        warned = self.__dict__.setdefault("_rsa_warned", set())
        if key not in warned:
            warned.add(key)
            logger.warning(message)


def _whole(forecasts: list[Forecast]) -> Forecast:
    """One forecast of several runs (one per task) that share the budget."""
    return Forecast(sum(f.problems for f in forecasts), sum(f.generations for f in forecasts),
                    sum(f.restored for f in forecasts), sum((f.worst for f in forecasts), Cost()),
                    sum((f.first_step for f in forecasts), Cost()), forecasts[0].limits)


def _settings(mark: Any) -> str:
    if not isinstance(mark, dict):
        return "written without rsa-plugins settings"
    return f"{mark.get('model')} {mark.get('fingerprint')}"


def _errors(result: RSAResult) -> str:
    errors = sorted({c.completion.error for c in result.population if c.completion.error})
    return "; ".join(errors) or "no candidates"


def _counters(engine: Engine) -> dict[str, Any]:
    """The engine's counters and running figures: ``engine_busy_fraction`` (time with a
    request inside the engine / time from its first request in to its last one out, see
    `rsa_plugins.busy`) and ``engine_stats`` (busy figures, prefix-cache hits, placement)."""
    out: dict[str, Any] = {f"engine_{a}": getattr(engine, a) for a in ("calls", "generate_seconds")
                           if hasattr(engine, a)}
    stats = engine.stats()
    if stats:
        out["engine_busy_fraction"] = stats.get("busy", {}).get("busy_fraction")
        out["engine_stats"] = stats
    return out
