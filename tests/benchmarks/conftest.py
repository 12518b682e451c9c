"""Benchmarks print their figures straight to the terminal (also in CI logs, where pytest
would otherwise capture them): use the `show` fixture instead of print."""

from collections.abc import Callable

import pytest


@pytest.fixture
def show(capsys: pytest.CaptureFixture[str]) -> Callable[..., None]:
    def _print(*args: object) -> None:
        with capsys.disabled():
            print(*args, flush=True)

    return _print
