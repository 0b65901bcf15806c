"""Shared fixtures: the real Zipkin server, traced app processes, trace ids, polls.

With CI=true a Zipkin test is never skipped: if Zipkin cannot start, the run fails.
Globals the code under test touches (the tracer provider, the redaction registry) are
restored after each test, so the suite passes in any order (CI runs it shuffled).
"""

from __future__ import annotations

import math
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosyvoice_otel.tools import zipkin_server
from cosyvoice_otel.tools.net import PortTakenError, PortWaitError, free_port, wait_for_port  # noqa: F401

from .support.helpers import ROOT, AppProcess, unavailable, write_pcm16

# the suite's xdist workers share the machine's two cores: one torch (OpenMP) thread per
# process, in the workers and in every app they launch. With one per core, idle OpenMP threads
# spin against the other processes (measured: the real engine's v2 cases beside three busy
# processes took 66 s with two threads, 48 s with one)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The kind of a test is its folder: ``unit`` (in memory, seconds) or ``e2e`` (real servers,
    launched apps): ``-m unit`` / ``-m e2e``, never a hand-kept list."""
    for item in items:
        kind = item.path.parent.name
        if kind in ("unit", "e2e"):
            item.add_marker(kind)



if os.environ.get("MUTANT_UNDER_TEST"):
    # under mutmut (it sets this per mutant): property tests with a few examples each; a
    # mutant a hundred examples kill is killed by ten, and the run is many times shorter
    from hypothesis import settings as _hypothesis

    _hypothesis.register_profile("mutation", max_examples=10, deadline=None)
    _hypothesis.load_profile("mutation")

@pytest.fixture
def memory():
    """A TracerProvider whose finished spans land in memory (``support/tracing.Memory``)."""
    from .support.tracing import Memory

    rig = Memory()
    yield rig
    rig.provider.shutdown()


@pytest.fixture
def refused_endpoint() -> Iterator[str]:
    """A Zipkin that is down: a port this test holds bound and never listens on, so no other
    process can take it and answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v2/spans"


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """The masking registry, the process's settings (resolved once per process) and the
    stages and reasons an app or a stage-map file declared start afresh for the next test."""
    from cosyvoice_otel import masking, schema, settings

    yield
    masking.forget_all()
    settings.forget_current()
    schema.forget_declarations()


@pytest.fixture
def process_settings(monkeypatch):
    """process_settings(environ) -> the settings a traced process with exactly these
    COSYVOICE_TRACED_* / OTEL_* variables resolves (``settings.current()``)."""
    from cosyvoice_otel import settings

    def resolve(environ: dict[str, str]):
        for name in list(os.environ):
            if name.startswith(("COSYVOICE_TRACED_", "OTEL_")):
                monkeypatch.delenv(name)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        settings.forget_current()
        return settings.current()

    return resolve


@pytest.fixture(scope="session")
def zipkin(tmp_path_factory, worker_id) -> Iterator[zipkin_server.ZipkinServer]:
    """One real Zipkin (official exec jar) on a free loopback port for the whole run, SHARED by
    the xdist workers (the first to need it starts it, the others read where it is; tests keep
    apart by trace ids and service names): one JVM on two cores, not one per worker. The
    controller stops it when the run ends (``pytest_sessionfinish``)."""
    import fcntl
    import json

    if worker_id == "master":  # no xdist: this process owns it
        server = _start_zipkin()
        yield server
        server.stop()
        return
    shared = tmp_path_factory.getbasetemp().parent / "zipkin.json"
    with open(shared.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker starts it; the others wait and read
        if shared.exists():
            server = zipkin_server.ZipkinServer(**json.loads(shared.read_text()))
        else:
            server = _start_zipkin()
            shared.write_text(json.dumps({"pid": server.pid, "port": server.port,
                                          "log_path": server.log_path}))
    yield server


def _start_zipkin() -> zipkin_server.ZipkinServer:
    try:
        return zipkin_server.start()
    except zipkin_server.ZipkinServerError as exc:
        unavailable(f"Zipkin could not start (CI=true never skips): {exc}", f"Zipkin could not start: {exc}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Each phase's report on the test item (``item.rep_call``): a fixture's teardown can see
    that the test failed (the Zipkin UI tests keep a screenshot then)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The controller of an xdist run stops the Zipkin its workers shared."""
    import json

    if hasattr(session.config, "workerinput"):  # a worker: the controller does it
        return
    base = getattr(session.config, "_tmp_path_factory", None)
    if base is None:
        return
    shared = base.getbasetemp() / "zipkin.json"  # the workers' base is <this>/gwN
    if shared.exists():
        zipkin_server.ZipkinServer(**json.loads(shared.read_text())).stop()
        shared.unlink()


@pytest.fixture(scope="session")
def kafka_broker():
    """One real Kafka broker (KRaft, Maven Central's jars: tests/kafka_server.py) for the
    session. A test that kills it starts it again before it ends."""
    import shutil

    from .support.kafka_server import KafkaBroker, KafkaError

    if shutil.which("java") is None or shutil.which("mvn") is None:
        message = "java and mvn are needed for the Kafka broker (.ci/setup has them)"
        unavailable(message)
    try:
        server = KafkaBroker()
    except KafkaError as exc:
        unavailable(f"the Kafka broker could not start (CI=true never skips): {exc}",
                    f"the Kafka broker could not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def real_engine():
    """Upstream CosyVoice's REAL engine: its venv (``.venv-cosyvoice``, .ci/setup) and tiny
    random-weights model directories its own loader accepts (examples/make_real_model.py, built
    once and cached: support/real_models.py): ``1`` (v1, named ``-Instruct`` so instruct mode
    is on), ``2`` (v2), ``fill`` (v2 whose LLM emits the fill token that streamed text input
    needs), and ``3`` (v3) when ``COSYVOICE_UPSTREAM`` names an upstream checkout. Never
    skipped under CI=true."""
    import types

    from .support import real_models

    python = real_models.PYTHON
    if not python.exists():
        unavailable("the real engine's venv is missing (.ci/setup makes .venv-cosyvoice)")
    models = real_models.ensure(real_models.wanted())
    site = next((ROOT / ".venv-cosyvoice" / "lib").glob("python3*/site-packages"))
    return types.SimpleNamespace(python=python, bin=python.parent, site_packages=site,
                                 models=models)


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
    write_pcm16(path, frames, rate)
    return path


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
