"""Several server processes on one port, each with its own listening socket, so that the kernel spreads
connections over them.

uvicorn's `--workers` hands every process one shared socket. A process that wakes accepts every waiting
connection at once, and a keep-alive client keeps the process it landed on: in the load bench one of two
processes served 89–98 % of the requests. With SO_REUSEPORT (Linux) each process listens on a socket of its
own on the same port and the kernel picks one per connection.
"""

from __future__ import annotations

import socket
import sys
from typing import cast

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess


def spreads_connections() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to the port beside the other processes' (SO_REUSEPORT); uvicorn makes it listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _port_socket_or_startup_failure(host: str, port: int) -> socket.socket:
    """In a starting server process: a bind that fails stops the parent (uvicorn restarts other exits)."""
    try:
        return port_socket(host, port)
    except OSError as error:
        print(f"concord: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)


class SocketOfItsOwn:
    """Stands in uvicorn's socket list: unpickled in each server process it is a new socket of that process.

    uvicorn pickles its socket list into every process it starts, restarts included; the socket is made
    there, so it closes with the process that listens on it.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        return (_port_socket_or_startup_failure, (self.host, self.port))


def check_port_free(host: str, port: int) -> None:
    """Without SO_REUSEPORT, so that a port held by another program (or another `serve`) is refused here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def run_processes(config: uvicorn.Config) -> None:
    """uvicorn's supervisor (restarts, signals), each process listening on a socket of its own."""
    check_port_free(config.host, config.port)
    # uvicorn only passes the list on: each process unpickles its own socket
    sockets = [cast(socket.socket, SocketOfItsOwn(config.host, config.port))]
    Multiprocess(config, sockets=sockets).run()
