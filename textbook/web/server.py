"""Serve the viewer with uvicorn: in the foreground (`textbook view`) or in a thread of a build (`--view`)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

from textbook.web.app import LOOPBACK, create_app
from textbook.web.backend import Backend


class ServeError(Exception):
    """The viewer cannot listen (port in use, bad address): one line for the user."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost`` or a loopback IPv4/IPv6 address (brackets allowed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        why = "is in use (choose another with --port)" if exc.errno in (98, 48) else f"cannot be used: {exc.strerror}"
        raise ServeError(f"{host}:{port} {why}") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Viewer:
    """The viewer app on a bound socket; ``start()`` serves it in a daemon thread, ``run()`` in this one."""

    def __init__(self, backend: Backend, host: str = "127.0.0.1", port: int = 8765):
        import uvicorn

        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        app = create_app(backend, allowed_hosts=LOOPBACK if is_loopback(host) else None)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to open in a browser, ``http://HOST:PORT/`` (an IPv6 host in brackets)."""
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def run(self) -> None:
        """Serve in this thread until stopped (`textbook view`)."""
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 10.0) -> Viewer:
        """Serve in a daemon thread; returns self once it answers. Raises ServeError when it does not start within
        ``timeout`` seconds."""
        self._thread = threading.Thread(target=self.run, name="textbook-view", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise ServeError(f"the viewer did not start on {self.url}")
        return self

    def stop(self) -> None:
        """Ask the server to exit, wait for its thread (at most 10 s) and close the socket."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()
