"""A tiny OpenAI-compatible chat server on 127.0.0.1 that answers instantly.

Used by the LiteLLM-engine tests (scripted faults: 429 with Retry-After, 5xx, malformed JSON,
empty content) and by the overhead benchmark (an instant-answer server, so the client side is
what gets measured).  Run as a subprocess: ``python tests/openai_stub.py --port P [--script J]``
where J is a JSON list of behaviours consumed one per request (then "ok" forever).  It stops by
itself after ``--lifetime`` seconds.  ``GET /stats`` returns what it received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ANSWER = "Adding the numbers gives 42. ANSWER: 42 \\boxed{42}"


def _reply(body: dict[str, Any], content: str) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    return {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "stub"),
        "choices": [{"index": i, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}} for i in range(n)],
        "usage": {"prompt_tokens": 10, "completion_tokens": 8 * n, "total_tokens": 10 + 8 * n},
    }


def serve(port: int, script: list[str], lifetime: float) -> None:
    from aiohttp import web

    log: list[dict[str, Any]] = []
    queue = list(script)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        behaviour = queue.pop(0) if queue else "ok"
        log.append({"t": time.monotonic(), "behaviour": behaviour, "seed": body.get("seed"),
                    "n": body.get("n"), "max_tokens": body.get("max_tokens"),
                    "auth": request.headers.get("Authorization", "")})
        if behaviour.startswith("429"):
            wait = behaviour.split(":", 1)[1] if ":" in behaviour else "1"
            return web.json_response({"error": {"message": "rate limited", "type": "rate_limit"}},
                                     status=429, headers={"Retry-After": wait})
        if behaviour in ("500", "503", "400", "401", "404"):
            return web.json_response({"error": {"message": f"stub {behaviour}"}}, status=int(behaviour))
        if behaviour == "malformed":
            return web.Response(text='{"choices": [', content_type="application/json")
        if behaviour == "empty":
            return web.json_response(_reply(body, ""))
        if behaviour.startswith("sleep"):
            await asyncio.sleep(float(behaviour.split(":", 1)[1]))
        return web.json_response(_reply(body, ANSWER))

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(log)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.sleep(lifetime)
        await runner.cleanup()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StubServer:
    """Context manager running the stub in a subprocess (so it never shares our CPU thread)."""

    def __init__(self, script: list[str] | None = None, lifetime: float = 900.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._args = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
                      "--lifetime", str(lifetime), "--script", json.dumps(script or [])]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StubServer:
        self.proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stub server died: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(self.base_url + "/models", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("stub server did not start within 60 s")

    def stats(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/stats"
        return json.loads(urllib.request.urlopen(url, timeout=10).read())

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--script", default="[]")
    ap.add_argument("--lifetime", type=float, default=900.0)
    a = ap.parse_args()
    serve(a.port, json.loads(a.script), a.lifetime)
