"""app/lean_http.py (the client's transport without an httpx transport) against a scripted HTTP server:
what it sends, keep-alive, and that a lost connection or a timeout is httpx's transport error, which
ConcordClient retries with the same idempotency key."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from app.client import ConcordClient, RetryPolicy
from app.lean_http import LeanHttp

FAST = RetryPolicy(attempts=5, first_delay_s=0.001, max_delay_s=0.01)
OBJECT = {"id": 7, "image_id": 3, "mode": "unaided", "label": "tumor", "x1": 1, "y1": 2, "x2": 3, "y2": 4}
OBJECT |= {"version": 1, "deleted": False}


@dataclass
class Request:
    head: list[str]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [
            line.split(": ", 1)[1] for line in self.head[1:] if line.lower().startswith(name.lower() + ":")
        ]
        return found[0] if found else None


# what the server does with the nth request (counted from 0): answer it, drop the connection, or stall
Script = Callable[[int, Request], bytes | None]


def answer(status: int, body: object, close: bool = False) -> bytes:
    content = json.dumps(body).encode()
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(content)}\r\n"
    return (head + ("connection: close\r\n" if close else "") + "\r\n").encode() + content


@dataclass
class Server:
    script: Script
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head_bytes := await reader.readuntil(b"\r\n\r\n"):
                head = head_bytes.decode().split("\r\n")[:-2]
                request = Request(head, b"")
                length = request.header("content-length")
                request.body = await reader.readexactly(int(length)) if length else b""
                self.requests.append(request)
                reply = self.script(len(self.requests) - 1, request)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[Server]:
    server = Server(script)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_request_is_sent_as_httpx_sent_it_and_its_answer_read() -> None:
    async with serving(lambda _n, _r: answer(201, OBJECT)) as server:
        client = ConcordClient(f"http://127.0.0.1:{server.port}/base/", "secret", retry=FAST)
        async with client:
            edit = await client.create(3, "unaided", (1, 2, 3, 4), "tumor", key="key-0001")
    [request] = server.requests
    assert request.head[0] == "POST /base/api/v1/images/3/annotations?mode=unaided HTTP/1.1"
    assert request.header("Host") == f"127.0.0.1:{server.port}"
    assert request.header("Authorization") == "Bearer secret"
    assert request.header("Idempotency-Key") == "key-0001"
    assert request.header("Content-Type") == "application/json"
    assert json.loads(request.body) == {"label": "tumor", "x1": 1, "y1": 2, "x2": 3, "y2": 4}
    assert (edit.status, edit.annotation.id, edit.annotation.box) == (201, 7, (1.0, 2.0, 3.0, 4.0))


async def test_one_connection_is_kept_alive_until_the_server_closes_it() -> None:
    def script(n: int, _request: Request) -> bytes:
        return answer(200, {"n": n}, close=n == 1)

    async with serving(script) as server:
        http = LeanHttp(f"http://127.0.0.1:{server.port}", {}, 5.0)
        answers = [(await http.request("GET", f"/{n}")).json()["n"] for n in range(4)]
        await http.aclose()
    assert answers == [0, 1, 2, 3]
    assert server.connections == 2, "requests 0 and 1 on one connection, 2 and 3 on the next"


async def test_a_dropped_connection_is_retried_with_the_same_key() -> None:
    def script(n: int, _request: Request) -> bytes | None:
        return None if n == 0 else answer(200, OBJECT)

    async with serving(script) as server:
        client = ConcordClient(f"http://127.0.0.1:{server.port}", "secret", retry=FAST)
        async with client:
            edit = await client.create(3, "unaided", (1, 2, 3, 4), "tumor")
    assert [request.header("Idempotency-Key") for request in server.requests] == [edit.key, edit.key]
    assert client.stats.network_errors == 1
    assert edit.status == 200


async def test_no_answer_in_time_is_a_read_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    listener = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    http = LeanHttp(f"http://127.0.0.1:{port}", {}, 0.05)
    with pytest.raises(httpx.ReadTimeout):
        await http.request("GET", "/")
    await http.aclose()
    listener.close()
    await listener.wait_closed()


async def test_a_refused_connection_is_a_connect_error() -> None:
    listener = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with ConcordClient(f"http://127.0.0.1:{port}", "secret", retry=FAST) as client:
        assert not await client.health()
    with pytest.raises(httpx.ConnectError):
        await LeanHttp(f"http://127.0.0.1:{port}", {}, 1.0).request("GET", "/")
