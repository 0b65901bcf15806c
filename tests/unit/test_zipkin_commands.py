"""`cosyvoice-traced zipkin start|status|stop` and the jar they run, without a JVM: the state
file `zipkin start` leaves, a stand-in process for the JVM and a loopback `/health`; the jar
fetch with a scripted `mvn` on PATH (issue 31: lines no test ran, found by the generated
mutants). The real Zipkin is started by the e2e tests (``tests/conftest.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cosyvoice_otel.launcher import cli
from cosyvoice_otel.tools import zipkin_server

from ..support.loopback_server import LoopbackServer, QuietHandler


class Health(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        body = json.dumps({"status": "UP"}).encode()
        self.reply(200, body, "application/json")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COSYVOICE_TRACED_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache"


@pytest.fixture
def jvm():
    """A process standing for the JVM `zipkin start` left running."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


def command(capsys, *args: str) -> tuple[int, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # `zipkin status` says "not running" with exit status 1
        code = int(exc.code or 0)
    return code, capsys.readouterr().out


def test_status_and_stop_with_nothing_started(cache, capsys) -> None:
    assert command(capsys, "zipkin", "status") == (1, "not running\n")
    assert command(capsys, "zipkin", "stop") == (0, "no Zipkin was running\n")


def test_status_then_stop_of_the_zipkin_the_state_file_names(cache, jvm, capsys) -> None:
    with LoopbackServer(Health, "/") as health:
        (cache / "zipkin-server.json").write_text(json.dumps(
            {"pid": jvm.pid, "port": health.port, "log": str(cache / "zipkin.log"),
             "host": "127.0.0.1"}))
        assert command(capsys, "zipkin", "status") == (
            0, f"up: http://127.0.0.1:{health.port} (pid {jvm.pid})\n")
        assert command(capsys, "zipkin", "stop") == (0, "stopped\n")
    jvm.wait(10)  # SIGTERM to the pid it recorded (which stop() reaped: the status is its)
    assert not (cache / "zipkin-server.json").exists()
    assert command(capsys, "zipkin", "status") == (1, "not running\n")


def test_a_started_zipkin_is_reused_not_started_twice(cache, jvm, capsys) -> None:
    (cache / "zipkin-server.json").write_text(json.dumps(
        {"pid": jvm.pid, "port": 9411, "log": "zipkin.log", "host": "::1"}))
    server = zipkin_server.start_detached(port=9999)
    assert (server.pid, server.port, server.host) == (jvm.pid, 9411, "::1")
    assert server.base_url == "http://[::1]:9411"  # the host it was started on, kept


@pytest.mark.parametrize("state", ["{", "[]", "null", "7", json.dumps({"pid": 1}), json.dumps(
    {"pid": "x", "port": 1, "log": "l"}), json.dumps({"pid": [1], "port": 1, "log": "l"})])
def test_a_broken_state_file_is_nothing_running(cache, state) -> None:
    (cache / "zipkin-server.json").write_text(state)
    assert zipkin_server.running() is None


def test_a_state_file_of_a_process_that_is_gone_is_nothing_running(cache) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (cache / "zipkin-server.json").write_text(json.dumps(
        {"pid": gone.pid, "port": 9411, "log": "zipkin.log"}))
    assert zipkin_server.running() is None
    assert zipkin_server.stop_detached() is False


@pytest.fixture
def no_jar(tmp_path, monkeypatch, cache) -> Path:
    """No jar anywhere: an empty cache, a home without ~/.m2, no ZIPKIN_JAR."""
    monkeypatch.delenv("ZIPKIN_JAR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def mvn(bin_dir: Path, script: str) -> None:
    tool = bin_dir / "mvn"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)


def test_no_jar_and_no_mvn_is_one_clear_error(no_jar) -> None:
    with pytest.raises(zipkin_server.ZipkinServerError, match="no Zipkin jar and no `mvn`"):
        zipkin_server.fetch_jar()


def test_a_named_jar_that_is_missing_is_not_fetched(no_jar, monkeypatch, tmp_path) -> None:
    mvn(no_jar, "exit 0")
    monkeypatch.setenv("ZIPKIN_JAR", str(tmp_path / "nowhere.jar"))
    with pytest.raises(zipkin_server.ZipkinServerError, match=r"ZIPKIN_JAR=.*nowhere.jar is not a"):
        zipkin_server.fetch_jar()


def test_mvn_failing_or_fetching_nothing_is_an_error(no_jar) -> None:
    mvn(no_jar, "echo refused >&2; exit 1")
    with pytest.raises(zipkin_server.ZipkinServerError, match="mvn could not fetch io.zipkin"):
        zipkin_server.fetch_jar()
    mvn(no_jar, "exit 0")
    with pytest.raises(zipkin_server.ZipkinServerError, match="mvn ran but .* is missing"):
        zipkin_server.fetch_jar()


def test_the_jar_mvn_fetched_is_the_one_returned(no_jar) -> None:
    jar = zipkin_server._m2_jar()
    # the arguments it gets: the exec jar alone, not its dependency tree
    mvn(no_jar, f'echo "$@" > "{no_jar}/args"; /bin/mkdir -p "{jar.parent}"; echo PK > "{jar}"')
    assert zipkin_server.fetch_jar() == jar
    args = (no_jar / "args").read_text().split()
    assert f"-Dartifact={zipkin_server.ARTIFACT}" in args and "-Dtransitive=false" in args
    # into the ~/.m2 of $HOME, where it is looked for (Maven's own default is the passwd home)
    assert f"-Dmaven.repo.local={no_jar.parent / 'home' / '.m2' / 'repository'}" in args


def test_no_arguments_is_the_help_and_exit_0(capsys) -> None:
    code, out = command(capsys)
    assert code == 0 and "Usage: cosyvoice-traced" in out and "zipkin" in out


def test_an_interrupted_command_exits_130(monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise click.exceptions.Abort()

    monkeypatch.setattr(cli.cli, "main", interrupted)
    assert cli.main(["zipkin", "status"]) == 130


def test_a_bad_zipkin_host_is_a_usage_error(capsys) -> None:
    assert cli.main(["zipkin", "start", "--host", "not a host"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cosyvoice-traced: error:") and "--host" in err and err.count("\n") == 1


def test_the_zipkin_start_failure_is_its_first_line(monkeypatch, capsys) -> None:
    def fails(port, host):
        raise zipkin_server.ZipkinServerError("Zipkin exited with 1; log tail:\nline 1\nline 2")

    monkeypatch.setattr(zipkin_server, "start_detached", fails)
    assert cli.main(["zipkin", "start", "--port", "9412"]) == 1
    assert capsys.readouterr().err == "cosyvoice-traced: error: Zipkin exited with 1; log tail:\n"


def test_zipkin_start_says_where_it_is(monkeypatch, capsys) -> None:
    seen = []

    def started(port, host):
        seen.append((port, host))
        return zipkin_server.ZipkinServer(os.getpid(), port, "log", host)

    monkeypatch.setattr(zipkin_server, "start_detached", started)
    assert cli.main(["zipkin", "start", "--port", "9412", "--host", "127.0.0.1"]) == 0
    assert seen == [(9412, "127.0.0.1")]
    assert capsys.readouterr().out == (f"Zipkin is up: http://127.0.0.1:9412 (pid {os.getpid()}); "
                                       "spans go to http://127.0.0.1:9412/api/v2/spans\n")


# -- starting Zipkin: every way the JVM can answer, with a stand-in `java` on PATH -----------

FAKE_JAVA = """#!{python}
import http.server, json, os, re, sys, time
port = int(re.search(r"ports\\[0\\]\\.port=(\\d+)", " ".join(sys.argv)).group(1))
mode = os.environ["FAKE_JAVA"]
if mode == "busy":
    print("java.net.BindException: Address already in use"); sys.exit(1)
if mode == "crash":
    print("Error: Invalid or corrupt jarfile"); sys.exit(3)
if mode in ("silent", "other"):
    time.sleep(120); sys.exit(0)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"status": "UP"}}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.fixture
def fake_java(tmp_path, monkeypatch, cache):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text(FAKE_JAVA.format(python=sys.executable))
    java.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    jar = tmp_path / "zipkin.jar"
    jar.write_bytes(b"")

    def start(mode: str, **kwargs):
        monkeypatch.setenv("FAKE_JAVA", mode)
        return zipkin_server.start(jar=jar, **kwargs)

    return start


def test_a_zipkin_that_finds_its_port_taken_is_said_so(fake_java) -> None:
    from cosyvoice_otel.tools.net import free_port

    port = free_port()
    with pytest.raises(zipkin_server.ZipkinServerError,
                       match=f"^port {port} was taken by another process$"):
        fake_java("busy", port=port)
    # a port we chose is chosen again, three times, then the same error
    with pytest.raises(zipkin_server.ZipkinServerError,
                       match="^port chosen was taken by another process$"):
        fake_java("busy")


def test_a_zipkin_that_exits_shows_the_tail_of_its_log(fake_java) -> None:
    with pytest.raises(zipkin_server.ZipkinServerError) as caught:
        fake_java("crash")
    assert str(caught.value).splitlines() == [
        "Zipkin exited with 3; log tail:", "Error: Invalid or corrupt jarfile"]


def test_a_zipkin_that_never_reports_up_is_stopped(fake_java, monkeypatch) -> None:
    started: list[int] = []
    real = zipkin_server.ZipkinServer.stop

    def stop(self, timeout: float = 20) -> None:
        started.append(self.pid)
        real(self, timeout)

    monkeypatch.setattr(zipkin_server.ZipkinServer, "stop", stop)
    with pytest.raises(zipkin_server.ZipkinServerError,
                       match="^Zipkin did not report UP within 1 s \\(log: .*zipkin-"):
        fake_java("silent", health_timeout=1)
    (pid,) = started
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # not left running


def test_a_health_answer_from_another_process_is_a_taken_port(fake_java) -> None:
    # something else answers /health on the port: our JVM did not bind it
    other = LoopbackServer(Health, "/health")
    try:
        with pytest.raises(zipkin_server.ZipkinServerError, match="was taken"):
            fake_java("other", port=other.port)
    finally:
        other.close()


def test_zipkin_start_records_the_server_it_started(fake_java, monkeypatch, cache) -> None:
    from cosyvoice_otel.tools.net import free_port

    monkeypatch.setenv("FAKE_JAVA", "serve")
    monkeypatch.setattr(zipkin_server, "fetch_jar", lambda: cache / "zipkin.jar")
    server = zipkin_server.start_detached(port=free_port())
    try:
        assert server.client().health()
        state = json.loads((cache / "zipkin-server.json").read_text())
        assert state == {"pid": server.pid, "port": server.port, "log": server.log_path,
                         "host": "127.0.0.1"}
        assert zipkin_server.running() == server
    finally:
        server.stop()


def test_a_jar_in_the_cache_is_found_and_not_fetched(cache, monkeypatch) -> None:
    monkeypatch.delenv("ZIPKIN_JAR", raising=False)
    monkeypatch.setattr(zipkin_server, "_m2_jar", lambda: cache / "nowhere.jar")
    jar = cache / zipkin_server.JAR_NAME
    jar.write_bytes(b"PK")
    assert zipkin_server.find_jar() == jar
    monkeypatch.setattr(zipkin_server.shutil, "which", lambda name: pytest.fail("no fetch"))
    assert zipkin_server.fetch_jar() == jar


def test_without_java_zipkin_start_is_one_error(cache, monkeypatch, tmp_path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(zipkin_server.ZipkinServerError,
                       match="^java not found: Zipkin needs Java 17\\+$"):
        zipkin_server.start(jar=tmp_path / "zipkin.jar")
