"""Checking user-supplied values: one error type, one wording for every entry point.

Every message names the parameter and what is allowed, e.g. ``population must be >= 1, got 0``
or ``unknown option 'populaton' (did you mean 'population'?)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Iterable
from typing import Any, TypeVar

_Class = TypeVar("_Class", bound=type)


class ConfigError(ValueError):
    """A parameter is outside its allowed range; the message names the parameter."""


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as an int in [low, high] (strings of digits and whole floats accepted)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def check_float(name: str, value: Any, low: float, high: float | None) -> float:
    """`value` as a float with low <= value <= high (strings of numbers accepted)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not (number >= low and (high is None or number <= high)):
        bound = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
    return number


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """`value` if it is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """`value` as a bool (also from "true"/"false"/"1"/"0" strings, as CLIs send them)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def did_you_mean(name: str, valid: Iterable[str], n: int = 1, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the `n` closest valid names, or an empty string."""
    close = difflib.get_close_matches(str(name), list(valid), n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def check_known(kind: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise for the first name in `given` that is not in `valid`, suggesting the closest."""
    valid = sorted(set(valid))
    for name in given:
        if name not in valid:
            raise ConfigError(f"unknown {kind} {name!r}{did_you_mean(name, valid)}")


def check_not_misspelled(kind: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise for a name in `given` that is not in `valid` but very close to one of them (for
    options that pass everything else on, e.g. to an engine or an LM: ``early_stp``)."""
    valid = list(valid)
    for name in given:
        hint = did_you_mean(name, valid, cutoff=0.85) if name not in valid else ""
        if hint:
            raise ConfigError(f"unknown {kind} {name!r}{hint}")


def refuse_unknown(cls: _Class) -> _Class:
    """Make a dataclass refuse unknown keyword arguments with a `ConfigError` naming the closest
    field (``unknown RSAConfig field 'populaton' (did you mean 'population'?)``)."""
    init = cls.__init__
    names = {f.name for f in dataclasses.fields(cls)}

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        check_known(f"{cls.__name__} field", kwargs, names)
        init(self, *args, **kwargs)

    cls.__init__ = checked  # type: ignore[misc]
    return cls
