"""A small keep-alive HTTP/1.1 client for the direct transport: one JSON request, one response.

aiohttp's client spends about 150 µs of Python per request on what a JSON API never uses
(cookies, redirects, tracing, multipart, streaming readers); at a few thousand generations a
second that, not the servers, bounds RSA.  This client writes the request bytes itself, reads
a ``Content-Length`` or chunked response into one buffer, and keeps idle connections per event
loop.  It speaks to ``http://`` and ``https://`` servers (TLS by asyncio, system CAs); no
proxies, redirects or compression, like aiohttp's defaults.  A dropped connection raises
`ConnectionError`, a timeout `asyncio.TimeoutError`: both retried by the engine.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any
from urllib.parse import urlsplit


class Headers(dict):  # type: ignore[type-arg]
    """Response headers by lower-case name; `get` takes a name in any case."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class Response:
    """`status`, `headers` (case-insensitive) and `body` (bytes) of one answer."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection(asyncio.Protocol):
    """One connection: it reads one response at a time into `waiter` (`Client._exchange`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.lost = False
        self.head: tuple[int, Headers, int] | None = None  # status, headers, body start

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            if self.head is not None and self._length() is None:  # body ends at close
                self._finish(len(self.buf))
            else:
                self.waiter.set_exception(ConnectionResetError(
                    "the server closed the connection before answering"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            self._advance()
        except (ValueError, ConnectionError) as exc:  # not HTTP: fail this request, drop it
            self.waiter.set_exception(ConnectionError(f"malformed HTTP response: {exc}"))
            self.close()

    def _advance(self) -> None:
        assert self.waiter is not None
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = _parse_head(bytes(self.buf[:end]), end + 4)
        length = self._length()
        if length is not None and length >= 0:
            if len(self.buf) >= self.head[2] + length:
                self._finish(self.head[2] + length)
        elif length == -1:  # chunked
            done = _chunked_end(self.buf, self.head[2])
            if done is not None:
                self._finish(done)

    def _length(self) -> int | None:
        """Body length from the headers; -1 for chunked; None: until the server closes."""
        assert self.head is not None
        headers = self.head[1]
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return -1
        if self.head[0] in (204, 304):
            return 0
        value = headers.get("Content-Length")
        return int(value) if value is not None else None

    def _finish(self, end: int) -> None:
        assert self.head is not None and self.waiter is not None
        status, headers, start = self.head
        body = bytes(self.buf[start:end])
        if self._length() == -1:
            body = _dechunk(body)
        del self.buf[:end]
        self.head = None
        self.waiter.set_result(Response(status, headers, body))

    def reusable(self) -> bool:
        """Open, and nothing unasked for arrived on it (bytes there would break the framing)."""
        return not self.lost and not self.buf and self.transport is not None \
            and not self.transport.is_closing()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            try:
                self.transport.close()
            except RuntimeError:  # its event loop is closed: the socket goes with it
                pass


def _parse_head(head: bytes, start: int) -> tuple[int, Headers, int]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"status line {lines[0][:80]!r}")
    headers = Headers()
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, start


def _chunked_end(buf: bytearray, pos: int) -> int | None:
    """Where a complete chunked body starting at `pos` ends, or None while it is incomplete."""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
        if size == 0:  # last chunk, then optional trailers and an empty line
            end = buf.find(b"\r\n\r\n", eol)
            return None if end < 0 else end + 4
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return None


def _dechunk(raw: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        out += raw[eol + 2: eol + 2 + size]
        pos = eol + 2 + size + 2


class Client:
    """Keep-alive connections to one server (`base`: ``http[s]://host[:port][/path]``), kept
    per event loop; `headers` go with every request."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        url = urlsplit(base)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"api_base must be an http:// or https:// URL, got {base!r}")
        self.host, self.tls = url.hostname, url.scheme == "https"
        self.port = url.port or (443 if self.tls else 80)
        self.prefix = url.path.rstrip("/")
        default = (self.port == 443) if self.tls else (self.port == 80)
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        host = netloc if default else f"{netloc}:{self.port}"
        self.headers = dict(headers or {})
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        self._fixed = f"Host: {host}\r\nUser-Agent: rsa-plugins\r\nAccept: application/json\r\n{extra}"
        self._idle: dict[int, tuple[asyncio.AbstractEventLoop, list[_Connection]]] = {}
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None

    async def request(self, method: str, path: str, body: Any = None, timeout: float = 600.0,
                      headers: dict[str, str] | None = None) -> Response:
        """Send `body` as JSON to ``base + path``; the whole response, whatever its status."""
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n{self._fixed}"
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if body is not None:
            head += "Content-Type: application/json\r\n"
        payload = f"{head}Content-Length: {len(data)}\r\n\r\n".encode("latin-1") + data
        loop = asyncio.get_running_loop()
        kept = self._idle.get(id(loop))
        if kept is None or kept[0] is not loop:  # a closed loop's id can come back
            kept = self._idle[id(loop)] = (loop, [])
        idle = kept[1]
        # A kept connection the server closed is never resent on silently: whether the server
        # read the request cannot be told, so the engine's retry (counted) sends it again.
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return await self._exchange(conn, payload, timeout, idle, loop)
        _, conn = await asyncio.wait_for(loop.create_connection(
            _Connection, self.host, self.port, ssl=self._ssl), timeout)
        return await self._exchange(conn, payload, timeout, idle, loop)

    async def _exchange(self, conn: _Connection, payload: bytes, timeout: float,
                        idle: list[_Connection], loop: asyncio.AbstractEventLoop) -> Response:
        conn.waiter = waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(payload)
        timer = loop.call_later(timeout, _expire, waiter, conn)
        try:
            response = await waiter
        except BaseException:
            conn.close()  # cancelled, timed out or broken: its state is unknown
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if response.headers.get("Connection", "").lower() == "close" or not conn.reusable():
            conn.close()
        else:
            idle.append(conn)
        return response

    async def aclose(self) -> None:
        """Close the idle connections (new ones open on the next request)."""
        for _, conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def _expire(waiter: asyncio.Future[Response], conn: _Connection) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError("no complete answer within the timeout"))
    conn.close()
