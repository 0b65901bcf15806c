"""Loopback and process helpers shared by the demo, the tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


class PortWaitError(RuntimeError):
    """The process exited, or nothing listened in time; the message says which."""


class PortTakenError(PortWaitError):
    """Something answers on the port, but it is not the process we started (a port another
    process took between our choice and our server's bind)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening_inodes(port: int) -> set[str] | None:
    """Inodes of the sockets listening on ``port`` (Linux /proc); None where /proc is absent."""
    inodes: set[str] = set()
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                inodes.add(fields[9])
    return inodes if found_table else None


def owns_listener(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the socket listening on ``port``; None if unknowable."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
        except OSError:
            continue
    return False


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Return once something listens on 127.0.0.1:port; raise PortWaitError if ``proc`` exits
    first or ``timeout`` seconds pass, PortTakenError if the listener is not ``proc``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PortWaitError(f"exited with status {proc.returncode} before listening on "
                                f"port {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                if proc is not None and owns_listener(proc.pid, port) is False:
                    raise PortTakenError(f"port {port} is served by another process")
                return
        time.sleep(0.1)
    raise PortWaitError(f"nothing listened on port {port} within {timeout:.0f} s")


def stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM (a traced app flushes its spans on it), then SIGKILL if it is still there after
    ``grace`` seconds: a process we started never outlives the command that started it."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
