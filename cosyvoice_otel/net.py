"""Loopback helpers shared by the demo, the tests and the benchmarks."""

from __future__ import annotations

import socket
import subprocess
import time


class PortWaitError(RuntimeError):
    """The process exited, or nothing listened in time; the message says which."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Return once something listens on 127.0.0.1:port; raise PortWaitError if ``proc`` exits
    first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PortWaitError(f"exited with status {proc.returncode} before listening on "
                                f"port {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise PortWaitError(f"nothing listened on port {port} within {timeout:.0f} s")
