"""The direct transport's HTTP client (`rsa_plugins.engines.wire`) against real sockets: servers
written here byte by byte (chunked bodies, bodies ending at close, dropped and closed keep-alive
connections, garbage, silence) and aiohttp's server (keep-alive, TLS)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess

import pytest

from rsa_plugins.engines.wire import Client

OK = b'{"ok": true}'


def fixed(body: bytes = OK, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + \
        str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


async def serve(answer, reads: list | None = None):
    """A raw server: `answer(request_bytes, writer)` per request; returns (server, base URL)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                if reads is not None:
                    reads.append(head + body)
                if await answer(head + body, writer) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


def run(coro):
    return asyncio.run(coro)


def test_request_bytes_and_keep_alive():
    reads: list[bytes] = []

    async def answer(req, w):
        w.write(fixed())

    async def main():
        server, base = await serve(answer, reads)
        client = Client(base, {"Authorization": "Bearer k"})
        for i in range(5):
            resp = await client.request("POST", "/chat/completions", {"i": i}, 5,
                                        {"x-session-id": "p1"})
            assert resp.status == 200 and resp.json() == {"ok": True}
        await client.aclose()
        server.close()
        return len(client._idle), server

    run(main())
    assert len(reads) == 5
    head, body = reads[0].split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert "Authorization: Bearer k" in lines and "x-session-id: p1" in lines
    assert f"Content-Length: {len(body)}" in lines and body == b'{"i": 0}'


def test_one_connection_is_kept_for_sequential_requests():
    peers: set = set()

    async def answer(req, w):
        peers.add(w.get_extra_info("peername"))
        w.write(fixed())

    async def main():
        server, base = await serve(answer)
        client = Client(base)
        for _ in range(20):
            await client.request("GET", "/models")
        await client.aclose()
        server.close()

    run(main())
    assert len(peers) == 1


def test_chunked_body_in_pieces_and_status_and_headers():
    async def answer(req, w):
        w.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        await w.drain()
        for piece in (b'{"err', b'or": "slow ', b'down"}'):
            w.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")

    async def main():
        server, base = await serve(answer)
        client = Client(base)
        first = await client.request("POST", "/x", {})
        second = await client.request("POST", "/x", {})  # the same connection, after a chunked body
        server.close()
        return first, second

    first, second = run(main())
    assert first.status == 429 and first.headers.get("retry-after") == "3"
    assert first.json() == {"error": "slow down"} and second.json() == first.json()


def test_body_that_ends_when_the_server_closes():
    async def answer(req, w):
        w.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK)
        return False  # close

    async def main():
        server, base = await serve(answer)
        client = Client(base)
        got = [await client.request("POST", "/x", {}) for _ in range(2)]
        server.close()
        return got

    assert [r.json() for r in run(main())] == [{"ok": True}] * 2


def test_connection_close_and_a_stale_keep_alive_connection_are_not_reused():
    peers: list = []

    async def answer(req, w):
        peers.append(w.get_extra_info("peername"))
        if len(peers) == 1:
            w.write(fixed(extra=b"Connection: close\r\n"))
            return False
        w.write(fixed())
        return len(peers) != 2  # the second connection closes after its answer, silently

    async def main():
        server, base = await serve(answer)
        client = Client(base)
        for _ in range(3):
            assert (await client.request("POST", "/x", {})).status == 200
            await asyncio.sleep(0.05)
        server.close()

    run(main())
    assert len(peers) == 3 and len(set(peers)) == 3


def test_a_kept_connection_closed_under_a_request_raises_and_is_never_resent_silently():
    """The server may have read it: the engine's counted retry resends, never the client."""
    per_connection: dict = {}

    async def answer(req, w):
        peer = w.get_extra_info("peername")
        per_connection[peer] = per_connection.get(peer, 0) + 1
        if per_connection[peer] == 2:
            return False  # the server dropped the kept connection as the request arrived
        w.write(fixed())

    async def main():
        server, base = await serve(answer)
        client = Client(base)
        first = await client.request("POST", "/x", {})
        with pytest.raises(ConnectionResetError):
            await client.request("POST", "/x", {})
        third = await client.request("POST", "/x", {})  # a new connection
        server.close()
        return first.status, third.status

    assert run(main()) == (200, 200)
    assert sorted(per_connection.values()) == [1, 2]


def test_drop_mid_answer_garbage_and_silence_raise_what_the_engine_retries():
    async def drop(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"par")
        return False

    async def garbage(req, w):
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    async def silence(req, w):
        await asyncio.sleep(2)

    async def main():
        out = []
        for answer, timeout in ((drop, 5), (garbage, 5), (silence, 0.2)):
            server, base = await serve(answer)
            try:
                await Client(base).request("POST", "/x", {}, timeout)
            except BaseException as exc:  # noqa: BLE001
                out.append(exc)
            server.close()
        return out

    drop_exc, garbage_exc, silence_exc = run(main())
    assert isinstance(drop_exc, ConnectionResetError)
    assert isinstance(garbage_exc, ConnectionError) and "malformed" in str(garbage_exc)
    assert isinstance(silence_exc, asyncio.TimeoutError)


def test_refused_connection_and_bad_url():
    from servers import free_port

    with pytest.raises(ConnectionError):
        run(Client(f"http://127.0.0.1:{free_port()}/v1").request("GET", "/models"))
    with pytest.raises(ValueError, match="api_base must be an http:// or https:// URL"):
        Client("ftp://example.org")


def test_https_with_a_certificate_the_system_trusts(tmp_path, monkeypatch):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the default context's trust store
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        return web.json_response({"got": await request.json()})

    async def main():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = Client(f"https://127.0.0.1:{port}/v1")
        try:
            return [(await client.request("POST", "/chat/completions", {"i": i})).json()
                    for i in range(3)]
        finally:
            await client.aclose()
            await runner.cleanup()

    assert run(main()) == [{"got": {"i": i}} for i in range(3)]
