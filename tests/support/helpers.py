"""Helpers of the tests (not fixtures: those are in tests/conftest.py): where things are, waits
that poll a condition, parallel workers that fail the test, ids, launched apps."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any, NoReturn

from cosyvoice_otel.tools.net import (  # noqa: F401 - re-exported for the tests
    PortTakenError,
    PortWaitError,
    free_port,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[2]
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


def reset_tracer_provider() -> None:
    """Undo trace.set_tracer_provider (the API allows one call per process; tests that set
    the global provider restore the unset state, as the SDK's own test utilities do)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


def new_trace_id(bits: int = 128) -> str:
    return secrets.token_hex(bits // 8)


def new_span_id() -> str:
    return secrets.token_hex(8)


def context_headers(fmt: str, trace_id: str, span_id: str) -> dict[str, str]:
    """A client's trace context, sampled, in one of the three formats the app reads:
    ``b3multi`` (X-B3-*), ``b3single`` (b3) or ``w3c`` (traceparent)."""
    if fmt == "b3multi":
        return {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}
    if fmt == "b3single":
        return {"b3": f"{trace_id}-{span_id}-1"}
    return {"traceparent": f"00-{trace_id}-{span_id}-01"}


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
            self.log = tempfile.TemporaryFile()  # noqa: SIM115 - read until the app stops
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self.log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                # generous: a real engine loading its models on a busy CI machine took over
                # 60 s; the wait ends at once when the app exits, so a pass costs nothing more
                wait_for_port(port, self.proc, timeout=240)
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


def examples(count: int) -> int:
    """A property test's example count: ``count``, or ten under mutmut (it sets
    MUTANT_UNDER_TEST per mutant), where a run of thousands of mutants must stay short."""
    return 10 if os.environ.get("MUTANT_UNDER_TEST") else count


class FakeClock:
    """A monotonic clock the test moves by hand (``clock.now += 0.5``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def fake_monotonic(monkeypatch, module, now: float = 100.0) -> FakeClock:
    """Give ``module`` a ``time`` whose monotonic() is a FakeClock (sleep stays real)."""
    import types

    clock = FakeClock(now)
    monkeypatch.setattr(module, "time", types.SimpleNamespace(monotonic=clock.monotonic,
                                                              sleep=time.sleep))
    return clock


def maven_jars(pom: str, jars: Path, stamp: str, what: str, error: type[Exception],
               timeout: float = 900) -> Path:
    """The runtime jars of ``pom``'s dependencies in ``jars``, resolved with Maven the first
    time (a ``.complete`` file holding ``stamp`` marks a whole copy); ``error`` on failure."""
    if (jars / ".complete").exists():
        return jars
    work = jars.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(pom)
    out = subprocess.run(["mvn", "-q", "-B", "dependency:copy-dependencies",
                          f"-DoutputDirectory={jars}", "-DincludeScope=runtime"],
                         cwd=work, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise error(f"mvn could not resolve {what}: {(out.stdout + out.stderr)[-2000:]}")
    (jars / ".complete").write_text(stamp)
    return jars


def unavailable(message: str, skip_message: str | None = None) -> NoReturn:
    """A real server or tool a test needs cannot be had: under CI=true that fails the test
    (CI never skips), elsewhere it is a skip (``skip_message`` when it says it differently)."""
    import pytest

    if IN_CI:
        pytest.fail(message)
    pytest.skip(message if skip_message is None else skip_message)


def write_pcm16(target: Any, frames: bytes, rate: int = 16000) -> bytes:
    """A mono 16-bit PCM WAV of ``frames`` at ``target`` (a path or a file object); the frames."""
    with wave.open(target if not isinstance(target, Path) else str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return frames
