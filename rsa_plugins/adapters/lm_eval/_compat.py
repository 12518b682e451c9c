"""The lm-eval names rsa-plugins needs that lm-eval does not offer as public API.

Checked on lm-eval 0.4.13.  Each is reached here and nowhere else; tests/test_compat.py fails
when the installed lm-eval no longer has one (`missing()` names them).  What they are for:

- ``lm_eval.api.registry.model_registry``: registering ``rsa-vllm`` / ``rsa-litellm`` (0.4.13
  has no plugin discovery for ``--model``);
- ``lm_eval.__main__.cli_evaluate``: the ``rsa-lm-eval`` command;
- ``lm_eval.utils.simple_parse_args_string`` and ``lm_eval.models.utils.normalize_gen_kwargs``:
  model_args and a task's ``generation_kwargs`` read exactly as lm-eval reads them;
- ``lm_eval.models.vllm_causallms.LLM``: swapped while ``VLLM.__init__`` runs, so rsa-vllm's
  engine is built where lm-eval builds its ``vllm.LLM``; and the attributes of lm-eval's
  ``VLLM`` in `VLLM_ATTRIBUTES`, which rsa-vllm's engine reuses;
- the evaluator's ``requests`` (its pending requests by type): read by `pending_requests` so
  that rsa-litellm can refuse log-likelihood tasks before the first generation;
- ``CacheHook.dbdict`` (``--use_cache``'s database): `cache_database`, where rsa-plugins marks
  the RSA settings the cached answers were made with.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: (module, name) of every private name used
NAMES = (("lm_eval.api.registry", "model_registry"), ("lm_eval.__main__", "cli_evaluate"),
         ("lm_eval.utils", "simple_parse_args_string"),
         ("lm_eval.models.utils", "normalize_gen_kwargs"),
         ("lm_eval.evaluator", "evaluate"))
#: what rsa-vllm reads of lm-eval's VLLM model: set in ``__init__`` (instance) or on the class
VLLM_ATTRIBUTES = ("model", "tokenizer", "think_end_token", "lora_request", "_max_gen_toks")
VLLM_CLASS_ATTRIBUTES = ("max_length", "tok_encode", "apply_chat_template")
#: the evaluator's local that holds every pending request, by request type
REQUESTS_LOCAL = "requests"


def get(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def model_registry() -> Any:
    return get("lm_eval.api.registry", "model_registry")


def cli_evaluate() -> Any:
    return get("lm_eval.__main__", "cli_evaluate")()


def simple_parse_args_string(text: str) -> dict[str, Any]:
    return get("lm_eval.utils", "simple_parse_args_string")(text)


def normalize_gen_kwargs(gen_kwargs: dict[str, Any], default_max_gen_toks: int) -> dict[str, Any]:
    return get("lm_eval.models.utils", "normalize_gen_kwargs")(
        gen_kwargs, default_max_gen_toks=default_max_gen_toks)


@contextmanager
def vllm_builds(factory: Any) -> Iterator[None]:
    """While lm-eval's ``VLLM.__init__`` runs, its ``LLM(**model_args)`` builds `factory`'s
    object instead (the one engine rsa-vllm runs on)."""
    module = importlib.import_module("lm_eval.models.vllm_causallms")
    original = module.LLM
    module.LLM = factory
    try:
        yield
    finally:
        module.LLM = original


def pending_requests() -> dict[str, list[Any]] | None:
    """The evaluator's pending requests by type (``generate_until``, ``loglikelihood``...), read
    from the running ``lm_eval.evaluator.evaluate`` call; None when not called from it."""
    code = get("lm_eval.evaluator", "evaluate")
    code = getattr(code, "__wrapped__", code).__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            found = frame.f_locals.get(REQUESTS_LOCAL)
            return dict(found) if isinstance(found, dict) else None
        frame = frame.f_back
    return None


def cache_database(cache_hook: Any) -> Any:
    """The ``--use_cache`` database behind lm-eval's cache hook (None without one)."""
    return getattr(cache_hook, "dbdict", None)


def missing() -> list[str]:
    """The names above that the installed lm-eval does not have (empty: all there)."""
    gone = []
    for module, name in NAMES:
        try:
            get(module, name)
        except (ImportError, AttributeError):
            gone.append(f"{module}.{name}")
    if "self.dbdict" not in inspect.getsource(get("lm_eval.api.model", "CacheHook")):
        gone.append("lm_eval.api.model.CacheHook.dbdict")
    try:
        evaluate = get("lm_eval.evaluator", "evaluate")
        if REQUESTS_LOCAL not in getattr(evaluate, "__wrapped__", evaluate).__code__.co_varnames:
            gone.append(f"lm_eval.evaluator.evaluate's local {REQUESTS_LOCAL!r}")
    except (ImportError, AttributeError):
        pass
    if importlib.util.find_spec("vllm") is not None:
        try:
            module = importlib.import_module("lm_eval.models.vllm_causallms")
            source = inspect.getsource(module.VLLM.__init__)
            gone += [f"VLLM.{a}" for a in VLLM_ATTRIBUTES if f"self.{a} =" not in source]
            gone += [f"VLLM.{a}" for a in VLLM_CLASS_ATTRIBUTES if not hasattr(module.VLLM, a)]
            if not hasattr(module, "LLM"):
                gone.append("lm_eval.models.vllm_causallms.LLM")
        except ImportError:
            gone.append("lm_eval.models.vllm_causallms")
    return gone
