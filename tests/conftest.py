"""Shared fixtures: the real Zipkin server, traced app processes, trace ids, polls.

With CI=true a Zipkin test is never skipped: if Zipkin cannot start, the run fails.
Globals the code under test touches (the tracer provider, the redaction registry) are
restored after each test, so the suite passes in any order (CI runs it shuffled).
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosyvoice_otel.tools import zipkin_server
from cosyvoice_otel.tools.net import PortTakenError, PortWaitError, free_port, wait_for_port  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def wait_until(condition, timeout: float = 20.0, interval: float = 0.2):
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` passes
    (the last value is returned): a wait on a condition, never a bare sleep."""
    deadline = time.monotonic() + timeout
    value = condition()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = condition()
    return value


def run_parallel(calls, timeout: float = 120) -> list:
    """Run each zero-argument callable in its own thread; return their results in order. An
    exception in any of them is raised here (so a failing assertion in a worker fails the
    test), and a worker still running after ``timeout`` is a failure, not a silent pass."""
    from concurrent.futures import ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        _, pending = wait(futures, timeout=timeout)
        assert not pending, f"{len(pending)} worker(s) still running after {timeout:.0f} s"
        return [future.result() for future in futures]


@pytest.fixture
def refused_endpoint() -> Iterator[str]:
    """A Zipkin that is down: a port this test holds bound and never listens on, so no other
    process can take it and answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v2/spans"


@pytest.fixture(autouse=True)
def _restore_redaction_registry() -> Iterator[None]:
    from cosyvoice_otel.sdk import redaction

    yield
    redaction.forget_all()


def reset_tracer_provider() -> None:
    """Undo trace.set_tracer_provider (the API allows one call per process; tests that set
    the global provider restore the unset state, as the SDK's own test utilities do)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


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
def kafka_broker():
    """One real Kafka broker (KRaft, Maven Central's jars: tests/kafka_server.py) for the
    session. A test that kills it starts it again before it ends."""
    import shutil

    from .kafka_server import KafkaBroker, KafkaError

    if shutil.which("java") is None or shutil.which("mvn") is None:
        message = "java and mvn are needed for the Kafka broker (.ci/setup has them)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        server = KafkaBroker()
    except KafkaError as exc:
        if IN_CI:
            pytest.fail(f"the Kafka broker could not start (CI=true never skips): {exc}")
        pytest.skip(f"the Kafka broker could not start: {exc}")
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
    """A launched app, stopped with SIGTERM (then SIGKILL) at the end of the test.

    The port is chosen free, but another process may take it before the app binds: then the
    app fails to bind, or something else answers (``PortTakenError``, checked against the
    app's own sockets). Either way the app is started again on a new port (the ``str(port)``
    items of ``argv`` are replaced), up to three times."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int) -> None:
        for attempt in range(3):
            self.port = port
            # a file, not a pipe: an app that logs a lot would block on a full, unread pipe
            self.log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self.log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                wait_for_port(port, self.proc)
                return
            except PortWaitError as exc:
                taken = isinstance(exc, PortTakenError) or "address already in use" in \
                    self.output().lower()
                if not taken or attempt == 2:
                    raise RuntimeError(f"{exc}\n{self.output()[-4000:]}") from None
                self.stop()
                new = free_port()
                argv = [str(new) if item == str(port) else item for item in argv]
                port = new

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
