"""The RSA ``--model_args`` of the lm-eval models: parsed, validated, unknown keys refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from ...config import RSAConfig
from ...validate import ConfigError, check_bool, check_known

#: RSAConfig fields (also accepted with an ``rsa_`` prefix)
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RSAConfig))
#: model_args that belong to the adapter rather than to RSAConfig or the engine
ADAPTER_ARGS = ("trace", "resume", "progress")
#: what lm-eval's CLI adds to every model's arguments; accepted and ignored where unused
CLI_ARGS = ("batch_size", "max_batch_size", "device")


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
            if name in CONFIG_FIELDS:
                given[name] = kwargs.pop(key)
            elif name in ADAPTER_ARGS:
                adapter[name] = kwargs.pop(key)
        if isinstance(given.get("stop"), str):  # lm-eval's arg parser gives one string
            given["stop"] = (given["stop"],)
        for name in ("include_reasoning", "lockstep"):
            if name in given:
                given[name] = check_bool(name, given[name])
        config = RSAConfig(**{**(defaults or {}), **given})
        trace = adapter.get("trace")
        progress = adapter.get("progress")
        return cls(config, frozenset(given), str(trace) if trace else None,
                   check_bool("resume", adapter.get("resume", True)),
                   None if progress is None else check_bool("progress", progress))


def check_model_args(model: str, given: Iterable[str], engine_args: Iterable[str]) -> None:
    """Refuse model_args that neither RSA, the adapter, the CLI nor the engine knows.

    The message names the key and the closest valid one, e.g. ``rsa-litellm: unknown
    model_args key 'populaton' (did you mean 'population'?)``.
    """
    valid = {*CONFIG_FIELDS, *(f"rsa_{f}" for f in CONFIG_FIELDS), *ADAPTER_ARGS, *CLI_ARGS,
             *engine_args}
    try:
        check_known("model_args key", given, valid)
    except ConfigError as exc:
        raise ConfigError(f"{model}: {exc}") from None
