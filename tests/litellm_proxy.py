"""LiteLLM's own proxy server (``litellm --config``), started for tests on 127.0.0.1.

    with LiteLLMProxy(config) as proxy:
        openai.OpenAI(base_url=proxy.base_url, api_key=proxy.key).chat.completions.create(...)

`config` is the proxy's YAML config as a dict; the proxy runs in its own process group with a
fresh master key (the proxy refuses to start without one), LiteLLM's local cost map, and the
environment of this process (so the start-up hook registers the ``rsa`` provider).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from servers import free_port, http_ok


class LiteLLMProxy:
    def __init__(self, config: dict[str, Any], env: dict[str, str | None] | None = None,
                 startup_timeout: float = 180.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.key = "sk-" + secrets.token_hex(24)
        self.dir = Path(tempfile.mkdtemp(prefix="litellm-proxy-"))
        self.config_path = self.dir / "config.yaml"
        self.config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.log_path = self.dir / "proxy.log"
        merged = {**os.environ, "LITELLM_MASTER_KEY": self.key,
                  "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
        self.env = {k: v for k, v in merged.items() if v is not None}  # None: unset
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "litellm"
        return [str(exe), "--config", str(self.config_path), "--host", "127.0.0.1",
                "--port", str(self.port)]

    def __enter__(self) -> LiteLLMProxy:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while not http_ok(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.__exit__()
                raise RuntimeError(f"LiteLLM proxy did not start:\n{tail}")
            time.sleep(0.5)
        return self

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=15)
                break
            except (ProcessLookupError, PermissionError):
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None
