"""A scripted OpenAI-compatible server that makes RSA's lineage visible (the ``rsa/`` provider's
tests).

Every choice it generates gets a serial number k and names itself ``cand-k`` in its text: "This
is cand-k; the answer is \\boxed{A}." with A = ``--answers``[k % len].  An aggregation prompt
quotes its parents' texts, so the ``cand-`` names in a request are exactly the candidates it
combines.  When a message shows DSPy's output-field markers (``[[ ## answer ## ]]``), the reply
is in DSPy's chat format instead (the name after the ``completed`` marker).

Usage: prompt_tokens = the words of the request's messages; completion_tokens = 5 + k % 7 per
choice, of which 1 + k % 3 are reasoning tokens (``completion_tokens_details``).  A model name
``name@S`` makes every answer wait S seconds; after the wait the request records whether the
client hung up meanwhile (``hung_up``).  ``--key K``: requests without ``Bearer K`` get a 401.

``stream: true`` requests get the same reply as server-sent events.

``GET /log``: one entry per chat request, in arrival order: model, the body's keys, messages
and sampling fields, ``ids`` (the k of its choices), ``parents`` (the k named in its
messages), ``usage``, ``status``, ``hung_up``.  Run as ``python tests/lineage_stub.py --port P``
or use `LineageStub`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from servers import free_port, serve_app, stop_process  # run as a script, its folder is on sys.path

NAME = re.compile(r"\bcand-(\d+)\b")
DSPY_MARK = "[[ ## answer ## ]]"


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def serve(port: int, key: str | None, answers: list[str], lifetime: float) -> None:
    from aiohttp import web

    log: list[dict[str, Any]] = []
    counter = {"k": 0}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        entry: dict[str, Any] = {
            "model": body.get("model"), "keys": sorted(body), "n": body.get("n"),
            "temperature": body.get("temperature"), "max_tokens": body.get("max_tokens"),
            "seed": body.get("seed"), "stop": body.get("stop"), "top_k": body.get("top_k"),
            "messages": body.get("messages"), "status": None, "hung_up": False, "ids": [],
            "parents": [], "usage": None}
        log.append(entry)
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            entry["status"] = 401
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}, status=401)
        texts = [_text(m) for m in body.get("messages", [])]
        entry["parents"] = sorted({int(x) for t in texts for x in NAME.findall(t)})
        n = int(body.get("n") or 1)
        ids = list(range(counter["k"], counter["k"] + n))
        counter["k"] += n
        entry["ids"] = ids
        delay = float(str(body.get("model", "")).partition("@")[2] or 0)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            entry["hung_up"] = True
            raise
        if request.transport is None or request.transport.is_closing():
            entry["hung_up"] = True
            return web.Response(status=499)
        dspy = any(DSPY_MARK in t for t in texts)
        choices, completion, reasoning = [], 0, 0
        for i, k in enumerate(ids):
            answer = answers[k % len(answers)]
            text = (f"{DSPY_MARK}\n{answer}\n\n[[ ## completed ## ]]\ncand-{k}" if dspy
                    else f"This is cand-{k}; the answer is \\boxed{{{answer}}}.")
            choices.append({"index": i, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text}})
            completion += 5 + k % 7
            reasoning += 1 + k % 3
        prompt = sum(len(t.split()) for t in texts)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion,
                 "completion_tokens_details": {"reasoning_tokens": reasoning}}
        entry.update(status=200, usage=usage)
        reply = {"id": f"chatcmpl-{ids[0]}", "object": "chat.completion",
                 "created": int(time.time()), "model": body.get("model"), "choices": choices,
                 "usage": usage}
        if body.get("stream"):
            return await _sse(request, reply)
        return web.json_response(reply)

    async def _sse(request: web.Request, reply: dict[str, Any]) -> web.StreamResponse:
        """The reply as a stream: each choice's text in one chunk, then the finish reasons."""
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        head = {k: reply[k] for k in ("id", "created", "model")}
        pieces = [{"index": c["index"], "delta": c["message"]} for c in reply["choices"]]
        pieces += [{"index": c["index"], "delta": {}, "finish_reason": "stop"}
                   for c in reply["choices"]]
        for piece in pieces:
            data = {**head, "object": "chat.completion.chunk", "choices": [piece]}
            await out.write(f"data: {json.dumps(data)}\n\n".encode())
        await out.write(b"data: [DONE]\n\n")
        return out

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def get_log(request: web.Request) -> web.Response:
        return web.json_response(log)

    serve_app([("POST", "/v1/chat/completions", chat), ("GET", "/v1/models", models),
               ("GET", "/log", get_log)], port, lifetime)


class LineageStub:
    """The stub in a subprocess, as a context manager (``.base_url``, ``.log(model)``)."""

    def __init__(self, key: str | None = None, answers: tuple[str, ...] = ("42", "42", "7"),
                 lifetime: float = 1800.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._args = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
                      "--answers", ",".join(answers), "--lifetime", str(lifetime)]
        if key is not None:
            self._args += ["--key", key]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LineageStub:
        self.proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env={**os.environ,
                                                                  "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stub died: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(self.base_url + "/models", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("lineage stub did not start within 60 s")

    def log(self, model: str | None = None) -> list[dict[str, Any]]:
        """The requests received (only those for `model`, when given)."""
        url = f"http://127.0.0.1:{self.port}/log"
        entries = json.loads(urllib.request.urlopen(url, timeout=30).read())
        return [e for e in entries if model is None or e["model"] == model]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def check_lineage(entries: list[dict[str, Any]], n: int, k: int, t: int) -> dict[str, int]:
    """Assert RSA's lineage in a log: N x T generations, T steps of N, each aggregation request
    combining K distinct candidates of the step before.  Returns {candidate: step}."""
    step: dict[int, int] = {}
    for e in entries:
        assert e["status"] == 200, e
        if not e["parents"]:
            here = 1
        else:
            assert len(e["parents"]) == k, e["parents"]
            steps = {step[p] for p in e["parents"]}
            assert len(steps) == 1, f"parents from several steps: {steps}"
            here = steps.pop() + 1
        for i in e["ids"]:
            step[i] = here
    assert len(step) == n * t, (len(step), n * t)
    for s in range(1, t + 1):
        assert sum(1 for v in step.values() if v == s) == n, (s, step)
    return step


def usage_sum(entries: list[dict[str, Any]]) -> dict[str, int]:
    """The server's usage summed over its answered requests."""
    out = {"prompt_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0}
    for e in entries:
        if e["usage"]:
            out["prompt_tokens"] += e["usage"]["prompt_tokens"]
            out["completion_tokens"] += e["usage"]["completion_tokens"]
            out["reasoning_tokens"] += e["usage"]["completion_tokens_details"]["reasoning_tokens"]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", default=None)
    ap.add_argument("--answers", default="42,42,7")
    ap.add_argument("--lifetime", type=float, default=1800.0)
    a = ap.parse_args()
    serve(a.port, a.key, a.answers.split(","), a.lifetime)
