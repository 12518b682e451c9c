"""A tiny OpenAI-compatible chat server on 127.0.0.1 that answers instantly.

Used by the LiteLLM-engine tests (scripted faults: 429 with Retry-After, 5xx, malformed JSON,
empty content) and by the overhead benchmark (an instant-answer server, so the client side is
what gets measured).  Run as a subprocess: ``python tests/openai_stub.py --port P [--script J]``
where J is a JSON list of behaviours consumed one per request; after it, ``--faults`` gives the
rate of each fault (drawn from a seeded RNG), "ok" otherwise.  It stops by itself after
``--lifetime`` seconds (and answers 429 after ``--max-requests``: request loops stay bounded).
``GET /stats`` returns what it received, ``GET /peak`` the most requests it held at once and
how many client connections it saw in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from servers import free_port  # run as a script, its folder is on sys.path

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


def serve(port: int, script: list[str], lifetime: float, faults: dict[str, float],
          seed: int, slow: float, max_requests: int) -> None:
    import random

    from aiohttp import web

    log: list[dict[str, Any]] = []
    queue = list(script)
    rng = random.Random(seed)
    live = {"now": 0, "max": 0}
    peers: set[Any] = set()

    def pick() -> str:
        if queue:
            return queue.pop(0)
        r = rng.random()
        for name, rate in faults.items():
            if r < rate:
                return name
            r -= rate
        return "ok"

    async def chat(request: web.Request) -> web.StreamResponse:
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        if request.transport is not None:
            peers.add(request.transport.get_extra_info("peername"))
        try:
            await asyncio.sleep(0)  # let other requests in, so `max_in_flight` means something
            return await answer(request)
        finally:
            live["now"] -= 1

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        behaviour = pick() if len(log) < max_requests else "429:1"
        entry = {"t": time.monotonic(), "behaviour": behaviour, "seed": body.get("seed"),
                 "n": body.get("n"), "max_tokens": body.get("max_tokens"),
                 "auth": request.headers.get("Authorization", ""),
                 "session": request.headers.get("x-session-id")}
        if len(log) < 200_000:
            log.append(entry)
        if behaviour == "reset":
            request.transport.abort()  # the client sees the connection drop mid-request
            return web.Response(status=500)
        if behaviour == "slow":
            await asyncio.sleep(slow)
        if behaviour.startswith("429"):
            wait = behaviour.split(":", 1)[1] if ":" in behaviour else "1"
            return web.json_response({"error": {"message": "rate limited", "type": "rate_limit"}},
                                     status=429, headers={"Retry-After": wait})
        if behaviour in ("500", "503", "400", "401", "403", "404"):
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

    async def peak(request: web.Request) -> web.Response:
        return web.json_response({"max_in_flight": live["max"], "requests": len(log),
                                  "connections": len(peers)})

    from servers import serve_app

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    serve_app([("POST", "/v1/chat/completions", chat), ("GET", "/v1/models", models),
               ("GET", "/stats", stats), ("GET", "/peak", peak), ("GET", "/health", health)],
              port, lifetime)


class StubServer:
    """Context manager running the stub in a subprocess (so it never shares our CPU thread)."""

    def __init__(self, script: list[str] | None = None, lifetime: float = 900.0,
                 faults: dict[str, float] | None = None, seed: int = 0, slow: float = 5.0,
                 max_requests: int = 1_000_000) -> None:
        """`faults`: rates of "429:S", "500", "503", "reset", "slow", "malformed", "empty" (or
        a client error: "400", "401", "403", "404")."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._args = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
                      "--lifetime", str(lifetime), "--script", json.dumps(script or []),
                      "--faults", json.dumps(faults or {}), "--seed", str(seed),
                      "--slow", str(slow), "--max-requests", str(max_requests)]
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
        return json.loads(urllib.request.urlopen(url, timeout=30).read())

    def peak(self) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.port}/peak"
        return json.loads(urllib.request.urlopen(url, timeout=30).read())

    def __exit__(self, *exc: object) -> None:
        from servers import stop_process

        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--script", default="[]")
    ap.add_argument("--lifetime", type=float, default=900.0)
    ap.add_argument("--faults", default="{}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slow", type=float, default=5.0)
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    a = ap.parse_args()
    serve(a.port, json.loads(a.script), a.lifetime, json.loads(a.faults), a.seed, a.slow,
          a.max_requests)
