"""Shared fixtures: the real Zipkin server, traced app processes, trace ids.

With CI=true a Zipkin test is never skipped: if Zipkin cannot start, the run fails.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosyvoice_otel import zipkin_server
from cosyvoice_otel.net import free_port, wait_for_port  # noqa: F401 - re-exported to the tests

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


@pytest.fixture(scope="session")
def make_model(tmp_path_factory):
    """make_model(version) -> a tiny demo model directory (examples/make_tiny_model.py)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import make_tiny_model

    made: dict[int, Path] = {}

    def _make(version: int) -> Path:
        if version not in made:
            made[version] = Path(make_tiny_model.make(
                str(tmp_path_factory.mktemp("models") / f"v{version}"), version))
        return made[version]

    return _make


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory) -> Path:
    """1.5 s of 16 kHz mono speech-like audio: a tone switched on and off."""
    path = tmp_path_factory.mktemp("audio") / "prompt.wav"
    rate = 16000
    frames = b"".join(
        int(9000 * math.sin(2 * math.pi * 220 * i / rate) * ((i // 4000) % 2 == 0))
        .to_bytes(2, "little", signed=True) for i in range(int(rate * 1.5)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def new_trace_id(bits: int = 128) -> str:
    return secrets.token_hex(bits // 8)


def new_span_id() -> str:
    return secrets.token_hex(8)


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
        # a file, not a pipe: an app that logs a lot would block on a full, unread pipe
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for_port(port, self.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.output()[-4000:]}") from None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

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
        return self.output()


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
