"""Upload bodies are refused before they are read: against a real uvicorn server, over raw sockets.

The client sends a request head that declares a huge body, and then waits without sending the body: an
answer that comes back proves that the server decided without reading it (it could not have read bytes
that were never sent). The old code answered nothing here: it waited for the body.
"""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from tests.factories import make_study, png_bytes, token_for
from tests.pages.test_pages import browser_client

# the server is a second app, with its own engine, in another thread
pytestmark = pytest.mark.commits

WAIT_FOR_ANSWER_S = 30.0
BOUNDARY = "concordtestboundary"


@pytest.fixture
def server(app: object, settings: Settings) -> Iterator[tuple[str, int]]:
    """A second app on the test database, served by uvicorn on loopback; `app` seeds the database."""
    settings.max_upload_bytes = 256 * 1024
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", ws="none")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield "127.0.0.1", port
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _multipart_headers(length: int | None, **extra: str) -> dict[str, str]:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **extra}
    if length is None:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(length)
    return headers


def _read_answer(connection: socket.socket) -> tuple[int, dict[str, str], bool]:
    """Status and headers of the answer, and whether the server then closed the connection."""
    status, headers = _read_response(connection)
    try:
        closed = connection.recv(1) == b""
    except ConnectionResetError:
        closed = True
    return status, headers, closed


def _read_response(connection: socket.socket) -> tuple[int, dict[str, str]]:
    connection.settimeout(WAIT_FOR_ANSWER_S)
    data = b""
    while True:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            chunk = b""
        data += chunk
        head, separator, body = data.partition(b"\r\n\r\n")
        if not chunk or (separator and _complete(head, body)):
            break
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)
    }
    return int(status_line.split()[1]), headers


def _complete(head: bytes, body: bytes) -> bool:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return len(body) >= int(value.strip())
    return False


async def test_anonymous_300_mb_upload_is_refused_401_before_its_body_is_read(
    app: object, server: tuple[str, int]
) -> None:
    setup = await make_study(app, image_count=1)
    with socket.create_connection(server) as connection:
        connection.sendall(_head(f"/api/v1/tasks/{setup.task.id}/images", _multipart_headers(300 * 1024**2)))
        status, headers, closed = _read_answer(connection)
    assert (status, headers.get("connection"), closed) == (401, "close", True)


async def test_a_page_upload_by_cookie_without_the_csrf_header_is_refused_before_reading(
    app: object, server: tuple[str, int]
) -> None:
    setup = await make_study(app, image_count=1)
    client, _csrf = await browser_client(app, "admin")
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    await client.aclose()
    with socket.create_connection(server) as connection:
        head = _head(f"/admin/tasks/{setup.task.id}/images", _multipart_headers(300 * 1024**2, Cookie=cookie))
        connection.sendall(head)
        status, headers, closed = _read_answer(connection)
    assert (status, headers.get("connection"), closed) == (403, "close", True)


async def test_declared_10_gib_upload_is_refused_413_at_once(app: object, server: tuple[str, int]) -> None:
    setup = await make_study(app, image_count=1)
    token = await token_for(app, "admin")
    headers = _multipart_headers(10 * 1024**3, Authorization=f"Bearer {token}")
    with socket.create_connection(server) as connection:
        connection.sendall(_head(f"/api/v1/tasks/{setup.task.id}/images", headers))
        status, answer_headers, closed = _read_answer(connection)
    assert (status, answer_headers.get("connection"), closed) == (413, "close", True)


def _multipart_body(files: list[tuple[str, bytes]]) -> bytes:
    parts = [
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + content
        + b"\r\n"
        for name, content in files
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _send_chunked(connection: socket.socket, body: bytes, chunk: int = 64 * 1024) -> None:
    """Send the body in chunks; stop early when the server has answered or closed."""
    try:
        for start in range(0, len(body), chunk):
            piece = body[start : start + chunk]
            connection.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        connection.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass


async def test_chunked_upload_over_the_limit_is_refused_413_and_nothing_is_stored(
    app: object, server: tuple[str, int], settings: Settings
) -> None:
    setup = await make_study(app, image_count=1)
    token = await token_for(app, "admin")
    # each file is within the per-file limit; together they pass the body limit (limit + 1 MiB framing)
    files = [(f"noise{index}.png", png_bytes(290, 290, seed=index)) for index in range(7)]
    assert all(len(content) <= settings.max_upload_bytes for _, content in files)
    body = _multipart_body(files)
    assert len(body) > settings.max_upload_bytes + 1024 * 1024
    before = sorted(path.name for path in settings.image_dir.rglob("*") if path.is_file())
    headers = _multipart_headers(None, Authorization=f"Bearer {token}")
    with socket.create_connection(server) as connection:
        connection.sendall(_head(f"/api/v1/tasks/{setup.task.id}/images", headers))
        sender = threading.Thread(target=_send_chunked, args=(connection, body))
        sender.start()
        status, answer_headers, closed = _read_answer(connection)
        sender.join()
    assert (status, answer_headers.get("connection"), closed) == (413, "close", True)
    after = sorted(path.name for path in settings.image_dir.rglob("*") if path.is_file())
    assert after == before
    staged = settings.data_dir / "tmp"
    assert not staged.exists() or [path for path in staged.rglob("*") if path.is_file()] == []


async def test_an_anonymous_large_json_body_is_refused_401_before_reading(server: tuple[str, int]) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(100 * 1024**2)}
    with socket.create_connection(server) as connection:
        connection.sendall(_head("/api/v1/jobs", headers))
        status, answer_headers, closed = _read_answer(connection)
    assert (status, answer_headers.get("connection"), closed) == (401, "close", True)


async def test_a_chunked_upload_within_the_limit_is_stored(
    app: object, server: tuple[str, int], settings: Settings
) -> None:
    setup = await make_study(app, image_count=1)
    token = await token_for(app, "admin")
    body = _multipart_body([("small0.png", png_bytes(seed=20)), ("small1.png", png_bytes(seed=21))])
    headers = _multipart_headers(None, Authorization=f"Bearer {token}")
    with socket.create_connection(server) as connection:
        connection.sendall(_head(f"/api/v1/tasks/{setup.task.id}/images", headers))
        _send_chunked(connection, body, chunk=1000)
        status, _headers = _read_response(connection)
    assert status == 201
    assert len([path for path in settings.image_dir.rglob("*") if path.is_file()]) == 3
