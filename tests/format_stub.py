"""A scripted OpenAI-compatible server that is always right, in the format it was last shown.

The model it plays is `stub_model.py`: it solves every problem it can parse and writes the answer
in the format of the **last format cue** it reads in the whole request (``#### 7``, "The answer
is", "So the answer is", "The final answer is", Minerva's "I hope it is correct", ``ANSWER:``,
``\\boxed``, "The best answer is", ``[BEGIN]``, a bare ``A:``; none: prose).  So a task scores
1.0 on it exactly when the requests keep the task's own format, and an aggregation prompt that
imposes another format makes the task's own filters miss the answer.

Like vLLM it honours ``stop`` (the reply is cut before the first stop string), ``max_tokens``
(finish_reason "length"), ``n`` and ``seed``, reports usage, serves ``/v1/models`` with
``max_model_len`` and ``/tokenize`` (``{"model", "messages"}`` -> ``{"count"}``), and rejects a
request whose prompt + ``max_tokens`` exceed ``max_model_len`` with HTTP 400 and vLLM's
message (the strict rule of OpenAI and of older vLLM; vLLM 0.3x clamps ``max_tokens`` to the
room left and rejects only a prompt longer than the context).  A token is a
whitespace-separated word; a message costs its words plus ``MESSAGE_OVERHEAD``; the same count is
used for ``/tokenize``, enforcement and usage.  Like vLLM it also serves ``/v1/completions`` with
``echo`` and ``logprobs`` (prompt log-probabilities, for lm-eval's ``local-completions``) and
the tokenizer endpoints lm-eval's remote tokenizer reads (``/tokenizer_info``, ``/tokenize``
with a ``prompt``, ``/detokenize``); ``--no-completions`` plays a chat-only API instead.

Every chat request is recorded: ``GET /log`` (bodies, status, the format used, prompt tokens),
``GET /stats`` (counts), ``POST /reset`` (forget them).  ``--fail 400`` (or 401, 500)
answers every chat request with that status.

Run as ``python tests/format_stub.py --port P [--max-model-len L] [--pad-words W] [--fail S]``,
or use :class:`FormatStub` (a context manager that starts it in a subprocess).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from stub_model import PIECE, cut, prompt_logprobs, reply_for, text_of

#: tokens a chat message costs on top of its words; 2 more for the generation prompt
MESSAGE_OVERHEAD = 4
GENERATION_PROMPT = 2


def count_tokens(messages: list[dict[str, Any]]) -> int:
    """The stub's token count of a chat prompt (used for /tokenize, enforcement and usage)."""
    return GENERATION_PROMPT + sum(len(text_of(m).split()) + MESSAGE_OVERHEAD for m in messages)


def serve(port: int, model: str, max_model_len: int, pad_words: int, fail: int | None,
          lifetime: float, completions: bool = True) -> None:
    import asyncio

    from aiohttp import web

    log: list[dict[str, Any]] = []
    counters = {"tokenize": 0, "completions": 0}
    vocab: dict[str, int] = {}
    words: list[str] = []

    def ids(text: str) -> list[int]:
        out = []
        for piece in PIECE.findall(text):
            if piece not in vocab:
                vocab[piece] = len(words)
                words.append(piece)
            out.append(vocab[piece])
        return out

    def error(status: int, message: str, kind: str) -> web.Response:
        return web.json_response({"error": {"message": message, "type": kind, "param": None,
                                            "code": status}}, status=status)

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        messages = body.get("messages") or []
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        n = int(body.get("n") or 1)
        prompt = count_tokens(messages)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        entry: dict[str, Any] = {"body": body, "status": 200, "prompt_tokens": prompt}
        log.append(entry)
        await asyncio.sleep(0)
        if fail is not None:
            entry["status"] = fail
            if fail == 401:
                return error(401, "Unauthorized: invalid API key", "AuthenticationError")
            return error(fail, f"stub answers every request with {fail}", "BadRequestError")
        if prompt + int(max_tokens or 0) > max_model_len or prompt >= max_model_len:
            entry["status"] = 400
            return error(400, (
                f"This model's maximum context length is {max_model_len} tokens. However, you "
                f"requested {prompt + int(max_tokens or 0)} tokens ({prompt} in the messages, "
                f"{int(max_tokens or 0)} in the completion). Please reduce the length of the "
                "messages or completion."), "BadRequestError")
        if max_tokens is None:
            max_tokens = max_model_len - prompt
        full, fmt = reply_for(messages, pad_words)
        text, finish = cut(full, stop, int(max_tokens))
        entry.update(format=fmt, reply=text, finish_reason=finish)
        used = len(text.split())
        return web.json_response({
            "id": f"chatcmpl-{len(log)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", model),
            "choices": [{"index": i, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text}} for i in range(n)],
            "usage": {"prompt_tokens": prompt, "completion_tokens": used * n,
                      "total_tokens": prompt + used * n},
        })

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": model, "object": "model", "owned_by": "stub", "max_model_len": max_model_len}]})

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        counters["tokenize"] += 1
        if "messages" in body:
            count = count_tokens(body["messages"])
            return web.json_response({"count": count, "max_model_len": max_model_len,
                                      "tokens": list(range(count))})
        tokens = ids(str(body.get("prompt", "")))
        return web.json_response({"count": len(tokens), "max_model_len": max_model_len,
                                  "tokens": tokens})

    async def detokenize(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prompt": "".join(words[i] for i in body.get("tokens", []))})

    async def tokenizer_info(request: web.Request) -> web.Response:
        return web.json_response({"eos_token": "</s>", "bos_token": "<s>", "pad_token": None,
                                  "tokenizer_class": "stub", "chat_template": None})

    async def complete(request: web.Request) -> web.Response:
        """``/v1/completions``: with ``echo`` and ``logprobs``, the prompt's log-probabilities
        (lm-eval's local-completions scores log-likelihoods so), plus one generated piece."""
        if not completions:
            return error(404, "Not Found", "NotFoundError")
        body = await request.json()
        counters["completions"] += 1
        prompts = body.get("prompt")
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        choices = []
        for i, prompt in enumerate(prompts or []):
            pieces = [words[t] for t in prompt] if not isinstance(prompt, str) else \
                PIECE.findall(prompt)
            text = "".join(pieces)
            if body.get("echo"):
                logprobs, tops = prompt_logprobs([*pieces, " ."])
                choices.append({"index": i, "text": text + " .", "finish_reason": "length",
                                "logprobs": {"tokens": [*pieces, " ."], "token_logprobs":
                                             [None, *logprobs[1:]], "top_logprobs":
                                             [None, *tops[1:]]}})
            else:
                reply, _ = reply_for([{"role": "user", "content": text}], pad_words)
                choices.append({"index": i, "text": reply, "finish_reason": "stop",
                                "logprobs": None})
        return web.json_response({"id": f"cmpl-{counters['completions']}",
                                  "object": "text_completion", "created": int(time.time()),
                                  "model": body.get("model", model), "choices": choices,
                                  "usage": {"prompt_tokens": 0, "completion_tokens": 0,
                                            "total_tokens": 0}})

    async def get_log(request: web.Request) -> web.Response:
        return web.json_response(log)

    async def stats(request: web.Request) -> web.Response:
        rejected = sum(1 for e in log if e["status"] != 200)
        return web.json_response({"requests": len(log), "served": len(log) - rejected,
                                  "rejected": rejected, "tokenize": counters["tokenize"],
                                  "completions": counters["completions"]})

    async def reset(request: web.Request) -> web.Response:
        log.clear()
        counters.update(tokenize=0, completions=0)
        return web.json_response({"ok": True})

    from servers import serve_app

    serve_app([("POST", "/v1/chat/completions", chat), ("GET", "/v1/models", models),
               ("POST", "/v1/completions", complete), ("POST", "/tokenize", tokenize),
               ("POST", "/detokenize", detokenize), ("GET", "/tokenizer_info", tokenizer_info),
               ("GET", "/log", get_log), ("GET", "/stats", stats), ("POST", "/reset", reset)],
              port, lifetime, max_body=64 * 1024 * 1024)


class FormatStub:
    """The stub in a subprocess: ``with FormatStub(max_model_len=1024) as stub: ...``.

    ``stub.base_url`` is ``http://127.0.0.1:PORT/v1``; ``stub.model`` the served model name
    (clients use ``hosted_vllm/<model>`` or ``openai-api/<service>/<model>``).
    """

    def __init__(self, model: str = "stub", max_model_len: int = 65536, pad_words: int = 0,
                 fail: int | None = None, lifetime: float = 3600.0,
                 completions: bool = True) -> None:
        from servers import free_port

        self.model, self.max_model_len = model, max_model_len
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._args = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
                      "--model", model, "--max-model-len", str(max_model_len),
                      "--pad-words", str(pad_words), "--lifetime", str(lifetime)]
        if fail is not None:
            self._args += ["--fail", str(fail)]
        if not completions:
            self._args.append("--no-completions")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FormatStub:
        from servers import wait_http

        self.proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if not wait_http(self.base_url + "/models", timeout=60, interval=0.1):
            self.__exit__()
            raise TimeoutError("format stub did not start within 60 s")
        return self

    def _get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        return json.loads(urllib.request.urlopen(url, timeout=60).read())

    def log(self) -> list[dict[str, Any]]:
        """Every chat request so far: ``{"body", "status", "prompt_tokens", "format", "reply"}``."""
        return self._get("/log")

    def stats(self) -> dict[str, int]:
        """``{"requests", "served", "rejected", "tokenize"}``."""
        return self._get("/stats")

    def reset(self) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/reset", data=b"{}",
                                     method="POST")
        urllib.request.urlopen(req, timeout=30).read()

    def __exit__(self, *exc: object) -> None:
        from servers import stop_process

        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="stub")
    ap.add_argument("--max-model-len", type=int, default=65536)
    ap.add_argument("--pad-words", type=int, default=0)
    ap.add_argument("--fail", type=int, default=None)
    ap.add_argument("--lifetime", type=float, default=3600.0)
    ap.add_argument("--no-completions", action="store_true", help="no /v1/completions (a "
                    "chat-only API: no prompt log-probabilities)")
    a = ap.parse_args()
    serve(a.port, a.model, a.max_model_len, a.pad_words, a.fail, a.lifetime,
          not a.no_completions)
