"""Start and stop local model servers for tests (no pytest dependency).

``VLLMServer`` runs vLLM's OpenAI-compatible server (CPU build) on 127.0.0.1 in its own process
group, waits until ``/v1/models`` answers, and kills the whole group on exit::

    with VLLMServer(model_dir, "smollm2") as srv:
        litellm.completion(model="hosted_vllm/" + srv.model_name, api_base=srv.base_url, ...)
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["VLLMServer", "free_port", "http_ok", "serve_app", "stop_process", "wait_http"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_app(routes: list[tuple[str, str, object]], port: int, lifetime: float,
              max_body: int = 1024**2) -> None:
    """Serve an aiohttp app (`routes`: (method, path, handler)) on 127.0.0.1:`port` for
    `lifetime` seconds: what the scripted stubs run in their subprocess."""
    import asyncio

    from aiohttp import web

    async def main() -> None:
        app = web.Application(client_max_size=max_body)
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.sleep(lifetime)
        await runner.cleanup()

    asyncio.run(main())


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:  # type: ignore[type-arg]
    """Terminate `proc`, killing it if it does not end within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def http_ok(url: str, timeout: float = 5.0) -> bool:
    """Return True if GET ``url`` answers HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_http(url: str, timeout: float, interval: float = 1.0) -> bool:
    """Poll ``url`` until it answers 200 or ``timeout`` seconds pass; return whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url):
            return True
        time.sleep(interval)
    return False


class VLLMServer:
    """vLLM's OpenAI server for a local checkpoint, as a context manager.

    Args:
        model_dir: Hugging Face checkpoint directory (e.g. ``smollm2_checkpoint()``).
        model_name: name served as ``--served-model-name`` (clients use ``hosted_vllm/<name>``).
        port: TCP port; a free one is picked when None.
        log_path: where stdout/stderr go; a temporary file when None.
        startup_timeout: seconds to wait for ``/v1/models``.
        max_model_len: ``--max-model-len``.
        extra_args: more command-line arguments for the server.
        env: extra environment variables (on top of ``os.environ`` and ``cpu_env()``).
    """

    MODULE = "vllm.entrypoints.openai.api_server"

    def __init__(
        self,
        model_dir: str | Path,
        model_name: str = "smollm2",
        *,
        port: int | None = None,
        log_path: str | Path | None = None,
        startup_timeout: float = 300.0,
        max_model_len: int = 2048,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.model_name = model_name
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        """The server command line."""
        return [
            sys.executable, "-m", self.MODULE,
            "--model", str(self.model_dir),
            "--served-model-name", self.model_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--dtype", "float32",  # CPUs without native bfloat16 (AVX2, like CI's) emulate it: ~10x slower
            "--max-model-len", str(self.max_model_len),
            "--enforce-eager",
            # Large enough to avoid chunked prefill, which with per-request seeds can crash this
            # build ("CPU Generator does not use offset").
            "--max-num-batched-tokens", "16384",
            "--disable-uvicorn-access-log",
            *self.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        """Environment for the server process."""
        from rsa_plugins.embedded import cpu_env

        return {**os.environ, **cpu_env(), **self.extra_env}

    def start(self) -> VLLMServer:
        """Start the server and block until it serves ``/v1/models`` (raise with the log tail)."""
        if self.proc is not None:
            raise RuntimeError("server already started")
        from rsa_plugins.vllm_cpu import ensure_vllm_dist_metadata

        ensure_vllm_dist_metadata()
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,  # own process group: stop() kills engine workers too
            )
        atexit.register(self.stop)
        deadline = started + self.startup_timeout
        while True:
            if not self.alive():
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(
                    f"vLLM server exited with code {code} during start-up "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            if self._models_ready():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"vLLM server not ready after {self.startup_timeout:.0f} s "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(1.0)
        self.startup_seconds = time.monotonic() - started
        return self

    def _models_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/models", timeout=5) as resp:
                data = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(m.get("id") == self.model_name for m in data.get("data", []))

    def alive(self) -> bool:
        """True while the server process is running."""
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        """True if the process runs and ``/health`` answers 200."""
        return self.alive() and http_ok(f"http://127.0.0.1:{self.port}/health")

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server log (without the start-up route listing)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        kept = [line for line in text.splitlines() if "] Route: " not in line]
        return "\n".join(kept[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        atexit.unregister(self.stop)
        pgid = proc.pid  # start_new_session: the server leads its own group
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Engine workers may outlive the API process; make sure the whole group is gone.
        _signal_group(pgid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
