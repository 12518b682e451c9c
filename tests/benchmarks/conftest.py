"""Benchmarks print their figures straight to the terminal (also in CI logs, where pytest
would otherwise capture them)."""

import pytest


@pytest.fixture(autouse=True)
def _show_figures(capsys: pytest.CaptureFixture[str]):
    with capsys.disabled():
        yield
