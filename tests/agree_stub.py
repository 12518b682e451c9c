"""An OpenAI-compatible server whose populations agree from known steps.

A problem says when its population agrees: "... agrees from step K." (K=0: never).  The server
tells a request's step from the scripted replies it quotes (their marks, as in `fakes`: 1
without quoted replies, else one more than theirs) and answers ``\\boxed{42}`` from step K on,
before it (and always for K=0) an answer of its own per request (``\\boxed{<seed % 9973>}``), so
the population is split.  Usage: prompt tokens = prompt characters / 4, completion tokens =
reply characters / 4.  ``GET /stats`` lists (problem, step) of every request it answered.

    python tests/agree_stub.py --port P
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

from fakes import mark, step_in  # run as a script: tests/ is on sys.path
from servers import free_port, serve_app, stop_process, wait_http

AGREES = re.compile(r"(\w+) agrees from step (\d+)")


def reply(messages: list[dict[str, str]], seed: int, index: int) -> tuple[str, str, int]:
    """(problem name, reply text, step) of one sample."""
    user = [m["content"] for m in messages if m["role"] == "user"][-1]
    name, agree = AGREES.search(user).groups()  # type: ignore[union-attr]
    step = step_in(user)
    value = "42" if int(agree) and step >= int(agree) else str((seed + index) % 9973 + 100)
    return name, f"Step {step}: the answer is \\boxed{{{value}}} {mark(seed, index, step)}", step


def main() -> None:
    from aiohttp import web

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--lifetime", type=float, default=900)
    args = ap.parse_args()
    seen: list[tuple[str, int]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        n, seed = int(body.get("n") or 1), int(body.get("seed") or 0)
        texts = []
        for i in range(n):
            name, text, step = reply(body["messages"], seed, i)
            seen.append((name, step))
            texts.append(text)
        prompt = sum(len(m["content"]) for m in body["messages"]) // 4
        done = sum(len(t) // 4 for t in texts)
        return web.json_response({
            "id": "agree", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "agree"),
            "choices": [{"index": i, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": t}}
                        for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": prompt, "completion_tokens": done,
                      "total_tokens": prompt + done}})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(seen)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "agree", "object": "model"}]})

    serve_app([("POST", "/v1/chat/completions", chat), ("GET", "/stats", stats),
               ("GET", "/v1/models", models)], args.port, args.lifetime)


class AgreeServer:
    """The server in a subprocess: ``with AgreeServer() as s: s.base_url, s.stats()``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> AgreeServer:
        self.proc = subprocess.Popen([sys.executable, __file__, "--port", str(self.port)])
        if not wait_http(f"{self.base_url}/models", timeout=60, interval=0.2):
            stop_process(self.proc)
            raise RuntimeError("agree_stub did not start")
        return self

    def stats(self) -> list[Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            import json

            return [tuple(x) for x in json.load(r)]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)


if __name__ == "__main__":
    main()
