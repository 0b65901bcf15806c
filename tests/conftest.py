"""Shared fixtures: the real Zipkin server, traced app processes, trace ids.

With CI=true a Zipkin test is never skipped: if Zipkin cannot start, the run fails.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosyvoice_otel import zipkin_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def zipkin() -> Iterator[zipkin_server.ZipkinServer]:
    """One real Zipkin (official exec jar) on a free loopback port for the whole session."""
    try:
        server = zipkin_server.start()
    except zipkin_server.ZipkinServerError as exc:
        if IN_CI:
            pytest.fail(f"Zipkin could not start (CI=true never skips): {exc}")
        pytest.skip(f"Zipkin could not start: {exc}")
    yield server
    server.stop()


def new_trace_id(bits: int = 128) -> str:
    return secrets.token_hex(bits // 8)


def new_span_id() -> str:
    return secrets.token_hex(8)


def free_port() -> int:
    return zipkin_server.free_port()


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"app exited with {proc.returncode} before listening:\n{out}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


def app_env(**extra: str) -> dict[str, str]:
    """The parent environment for launched apps: the venv first on PATH, fast span export."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("OTEL_") or k.startswith("COSYVOICE_TRACED_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    env.update(extra)
    return env


class AppProcess:
    """A launched app, stopped with SIGTERM (then SIGKILL) at the end of the test."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(port, self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""


@pytest.fixture
def launch_app() -> Iterator:
    started: list[AppProcess] = []

    def _launch(argv: list[str], env: dict[str, str], port: int) -> AppProcess:
        app = AppProcess(argv, env, port)
        started.append(app)
        return app

    yield _launch
    for app in started:
        app.stop()
