"""A scripted OpenAI-compatible server that is always right, in the format it was last shown.

It plays a model that follows instructions literally: it solves every problem it can parse
correctly, and writes the answer in the format of the **last format cue** it reads in the whole
request (system message, few-shot turns, user turn and assistant prefill, in order).  So a task
scores 1.0 on it exactly when the requests keep the task's own format, and an aggregation prompt
that imposes another format makes the task's own filters miss the answer.

Format cues (the latest one wins) and what the reply ends with:

=================================  ==========================  ===============================
cue in the request                 (task)                      reply ends with
=================================  ==========================  ===============================
``#### 7`` (a few-shot answer)     gsm8k                       ``#### 7``
``The answer is``                  gsm8k-cot examples          ``The answer is 7.``
``ANSWER:``                        an explicit instruction     ``ANSWER: 7``
``\\boxed``                         math instruction            ``\\boxed{7}``
``The best answer is``             arc_challenge_chat          ``The best answer is B.``
none                               open-ended writing          prose, no answer line
=================================  ==========================  ===============================

With an assistant prefill (the last message is the assistant's) the reply continues it: after
``The best answer is`` it is `` B.``.

Problems it can solve (the last one found in the request is the one asked): "Tom has 3 apples
and buys 4 more." (+), "... and gives away 4." (-), "Tom buys 3 boxes of pens with 4 in each
box." (x), and "Which number equals 3 plus 4?" followed by options ``A. 6`` ... (multiple
choice).  Anything else is open-ended: it writes a short e-mail, signed with the name of the
last "sign ... as NAME" instruction it read (else "Sam").  arc_challenge_chat's single-quoted
YAML sends literal ``\\n`` between the question and its options; the stub reads them as line
breaks, as a model would.

Like vLLM it honours ``stop`` (the reply is cut before the first stop string), ``max_tokens``
(finish_reason "length"), ``n`` and ``seed``, reports usage, serves ``/v1/models`` with
``max_model_len`` and ``/tokenize`` (``{"model", "messages"}`` -> ``{"count"}``), and rejects a
request whose prompt + ``max_tokens`` exceed ``max_model_len`` with HTTP 400 and vLLM's
message (the strict rule of OpenAI and of older vLLM; vLLM 0.3x clamps ``max_tokens`` to the
room left and rejects only a prompt longer than the context).  A token is a whitespace-separated word; a message costs its words plus
``MESSAGE_OVERHEAD``; the same count is used for ``/tokenize``, enforcement and usage.

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
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

#: tokens a chat message costs on top of its words; 2 more for the generation prompt
MESSAGE_OVERHEAD = 4
GENERATION_PROMPT = 2

#: format cue -> format name (searched in the concatenated request text; the last match wins)
CUES = [
    (re.compile(r"####"), "hash"),
    (re.compile(r"The answer is"), "cot"),
    (re.compile(r"ANSWER:"), "answer_line"),
    (re.compile(r"\\boxed"), "boxed"),
    (re.compile(r"The best answer is"), "best"),
]

ADD = r"(?P<name>[A-Z][a-z]+) has (?P<a>\d+) (?P<thing>[a-z]+) and buys (?P<b>\d+) more\."
SUB = r"(?P<name2>[A-Z][a-z]+) has (?P<c>\d+) (?P<thing2>[a-z]+) and gives away (?P<d>\d+)\."
MUL = r"(?P<name3>[A-Z][a-z]+) buys (?P<e>\d+) boxes of (?P<thing3>[a-z]+) with (?P<f>\d+) in each box\."
MC = r"Which number equals (?P<g>\d+) plus (?P<h>\d+)\?"
PROBLEM = re.compile("|".join(f"(?:{p})" for p in (ADD, SUB, MUL, MC)))
OPTION = re.compile(r"^\s*\(?([A-D])[.)]\s*(-?\d+)\s*$", re.M)

SIGN = re.compile(r"[Ss]ign [^.\n]*?\bas ([A-Z][a-z]+)")
PAD = "I check every number once more, slowly and carefully,"


def count_tokens(messages: list[dict[str, Any]]) -> int:
    """The stub's token count of a chat prompt (used for /tokenize, enforcement and usage)."""
    return GENERATION_PROMPT + sum(len(_text(m).split()) + MESSAGE_OVERHEAD for m in messages)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def last_cue(text: str) -> str | None:
    """The format of the last cue in `text` (None: no cue, i.e. open-ended)."""
    best, where = None, -1
    for pattern, name in CUES:
        for m in pattern.finditer(text):
            if m.end() > where:
                best, where = name, m.end()
    return best


def solve(text: str) -> tuple[str, str, str] | None:
    """(answer, reasoning, kind) for the last problem in `text`; None if there is none."""
    text = text.replace("\\n", "\n")  # arc_challenge_chat's single-quoted YAML sends a literal \n
    found = list(PROBLEM.finditer(text))
    if not found:
        return None
    m = found[-1]
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    if "a" in g:
        a, b = int(g["a"]), int(g["b"])
        return str(a + b), f"{g['name']} starts with {a} and gets {b} more, so {a} + {b} = {a + b}.", "math"
    if "c" in g:
        c, d = int(g["c"]), int(g["d"])
        return str(c - d), f"{g['name2']} starts with {c} and gives {d} away, so {c} - {d} = {c - d}.", "math"
    if "e" in g:
        e, f = int(g["e"]), int(g["f"])
        return str(e * f), f"There are {e} boxes with {f} each, so {e} * {f} = {e * f}.", "math"
    value = int(g["g"]) + int(g["h"])
    for letter, shown in OPTION.findall(text[m.end():]):
        if int(shown) == value:
            return letter, f"{g['g']} plus {g['h']} is {value}, which is option {letter}.", "choice"
    return None


def reply_for(messages: list[dict[str, Any]], pad_words: int = 0) -> tuple[str, str]:
    """(reply text, format used) for a chat request; see the module docstring."""
    text = "\n\n".join(_text(m) for m in messages)
    fmt = last_cue(text)
    prefill = _text(messages[-1]) if messages and messages[-1].get("role") == "assistant" else None
    solved = solve(text)
    if solved is None:
        signer = ([m.group(1) for m in SIGN.finditer(text)] or ["Sam"])[-1]
        body = ("Dear team,\nthank you for the clear plan. I have read it and I agree with the "
                f"schedule; I will send my part by Friday.\nBest regards,\n{signer}")
        if fmt is not None:  # an instruction asked for an answer line even here
            body += {"hash": "\n#### done", "cot": " The answer is done.",
                     "boxed": " \\boxed{done}", "best": " The best answer is A."}.get(
                fmt, "\nANSWER: done")
        return body, fmt or "none"
    answer, reasoning, _ = solved
    if pad_words > 0:
        words = (PAD + " ") * (pad_words // len(PAD.split()) + 1)
        reasoning = " ".join(words.split()[:pad_words]) + " " + reasoning
    if prefill is not None and fmt == "best" and prefill.rstrip().endswith("The best answer is"):
        return f" {answer}.", fmt
    if prefill is not None and fmt == "cot" and prefill.rstrip().endswith("The answer is"):
        return f" {answer}.", fmt
    endings = {"hash": f"{reasoning}\n#### {answer}", "cot": f"{reasoning} The answer is {answer}.",
               "answer_line": f"{reasoning}\nANSWER: {answer}",
               "boxed": f"{reasoning} So the result is \\boxed{{{answer}}}.",
               "best": f"{reasoning} The best answer is {answer}.",
               None: f"{reasoning} So the result is {answer}."}
    return endings[fmt], fmt or "none"


def cut(text: str, stop: list[str], max_tokens: int | None) -> tuple[str, str]:
    """Apply vLLM's stop-string and max_tokens semantics: (text, finish_reason)."""
    finish = "stop"
    hits = [text.find(s) for s in stop if s and s in text]
    if hits:
        text = text[: min(hits)]
    if max_tokens is not None:
        words = re.findall(r"\s*\S+", text)
        if len(words) > max_tokens:
            text, finish = "".join(words[:max_tokens]), "length"
    return text, finish


PIECE = re.compile(r"\s*\S+|\s+$")
SUM = re.compile(r"Which number equals (\d+) plus (\d+)\?")


def prompt_logprobs(pieces: list[str]) -> tuple[list[float], list[dict[str, float]]]:
    """Log-probabilities of a prompt's pieces as a model that knows the sums would give them:
    after the last "Answer:", a number other than the asked sum is unlikely (-6), anything else
    likely (-0.1); each position's top alternative is the likely one."""
    text = "".join(pieces)
    asked = list(SUM.finditer(text))
    answer_at = text.rfind("Answer:")
    expected = str(sum(map(int, asked[-1].groups()))) if asked else None
    logprobs, tops, at = [], [], 0
    for piece in pieces:
        word = piece.strip().rstrip(".")
        wrong = (expected is not None and at >= answer_at >= 0 and word.lstrip("-").isdigit()
                 and word != expected)
        lp = -6.0 if wrong else -0.1
        logprobs.append(lp)
        tops.append({piece: lp, **({f" {expected}": -0.1} if wrong else {})})
        at += len(piece)
    return logprobs, tops


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
