"""A small HTTP/1.1 client on asyncio's own transports, with httptools parsing the answers.

Why: the load generator shares the machine with the server it measures, and httpx spent about 2 ms of CPU
per request (building and merging its request and URL models, httpcore's pool on anyio, h11): more than a
third of what the server spent. This one does what `ConcordClient` needs and nothing more: plain http,
keep-alive connections (one per request in flight; one expert's client uses one), whole bodies, one
timeout for connecting and one for the answer. Its errors are httpx's transport errors and its answers
httpx Responses, so the client's retries and callers see what they saw before.
"""

import asyncio
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

import httptools
import httpx

# what httpx sends by default, less content codings: the server answers uncompressed, as it did
_FIXED_HEADERS = (
    f"Accept: */*\r\nConnection: keep-alive\r\nUser-Agent: python-httpx/{httpx.__version__}\r\n".encode()
)

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: sends a request, parses its answer; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.keep_alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.fail(httpx.RemoteProtocolError(f"malformed answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.fail(httpx.ReadError(f"connection closed: {exc}" if exc else "connection closed"))

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result((self._parser.get_status_code(), self._headers, b"".join(self._body)))
        self._headers, self._body = [], []

    def send(self, message: bytes) -> "asyncio.Future[Answer]":
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(message)
        return self._answer

    def fail(self, error: Exception) -> None:
        """The answer in wait gets `error`; the connection is closed (it is never reused)."""
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)
        self.close()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class LeanHttp:
    """Requests to one base URL (plain http) with fixed headers, over reused keep-alive connections."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"LeanHttp speaks plain http to a host, not {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        host = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"Host: {host}\r\n", *(f"{name}: {value}\r\n" for name, value in headers.items())]
        self._headers = "".join(lines).encode("latin-1") + _FIXED_HEADERS
        self._timeout_s = timeout_s
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """Send one request and read its whole answer; httpx.TransportError when that fails."""
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        message = self._message(method, path, body, params, headers)
        connection = self._idle_connection() or await self._connect(timeout_s)
        answer = connection.send(message)
        expiry = asyncio.get_running_loop().call_later(
            timeout_s, connection.fail, httpx.ReadTimeout(f"no answer within {timeout_s} s")
        )
        try:
            status, answer_headers, content = await answer
        except BaseException:  # an error, a timeout or a cancelled caller: the connection is not reused
            connection.close()
            raise
        finally:
            expiry.cancel()
        if connection.keep_alive and not connection.lost:
            self._idle.append(connection)
        else:
            connection.close()
        return httpx.Response(status, headers=answer_headers, content=content)

    def _message(
        self,
        method: str,
        path: str,
        body: bytes | None,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
    ) -> bytes:
        target = self._prefix + path + ("?" + urlencode(params) if params else "")
        head = f"{method} {target} HTTP/1.1\r\n"
        if headers:
            head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        if body is not None:
            head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
        return b"".join((head.encode("latin-1"), self._headers, b"\r\n", body or b""))

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost:
                return connection
        return None

    async def _connect(self, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(_Connection, self._host, self._port)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection within {timeout_s} s") from None
        except OSError as error:
            raise httpx.ConnectError(str(error)) from error
        return connection

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
