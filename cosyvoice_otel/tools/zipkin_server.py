"""A local Zipkin server from the official exec jar: fetch (Maven Central), start, stop, status.

Used by the test fixtures, by ``cosyvoice-traced demo`` and by ``cosyvoice-traced zipkin
start|stop|status`` (a Zipkin for users without Docker). The jar is looked up in this order:
``$ZIPKIN_JAR``, the project cache (``$COSYVOICE_TRACED_CACHE`` or ``~/.cache/cosyvoice-otel``),
the local Maven repository; when none has it, ``mvn dependency:get`` fetches it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.net import free_port, owns_listener
from cosyvoice_otel.tools.zipkin import ZipkinClient

ZIPKIN_VERSION = "3.6.1"
ARTIFACT = f"io.zipkin:zipkin-server:{ZIPKIN_VERSION}:jar:exec"
JAR_NAME = f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"


class ZipkinServerError(Exception):
    """The jar could not be obtained or the server did not become healthy."""


def cache_dir() -> Path:
    from cosyvoice_otel.settings import cache_dir as root

    return Path(root())


def _m2_jar() -> Path:
    return (Path.home() / ".m2" / "repository" / "io" / "zipkin" / "zipkin-server"
            / ZIPKIN_VERSION / JAR_NAME)


def find_jar() -> Path | None:
    """The first existing jar among $ZIPKIN_JAR, the cache and ~/.m2, or None."""
    explicit = os.environ.get("ZIPKIN_JAR")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    for candidate in (cache_dir() / JAR_NAME, _m2_jar()):
        if candidate.is_file():
            return candidate
    return None


def fetch_jar(timeout: float = 600) -> Path:
    """Return a jar, fetching it with Maven when it is not here yet."""
    found = find_jar()
    if found:
        return found
    if os.environ.get("ZIPKIN_JAR"):
        raise ZipkinServerError(f"ZIPKIN_JAR={os.environ['ZIPKIN_JAR']} is not a file")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ZipkinServerError("no Zipkin jar and no `mvn` to fetch it; set ZIPKIN_JAR")
    # The exec jar bundles its dependencies: fetch that one file, not its dependency tree.
    # the repository named: Maven's default is the JVM's user.home (the passwd entry), which is
    # not $HOME when HOME is set otherwise (sudo, containers); we look under $HOME
    repo = _m2_jar().parents[4]
    cmd = [mvn, "-q", "-B", "dependency:get", f"-Dartifact={ARTIFACT}", "-Dtransitive=false",
           f"-Dmaven.repo.local={repo}"]
    try:
        subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise ZipkinServerError(f"mvn could not fetch {ARTIFACT}: {exc}") from None
    if not _m2_jar().is_file():
        raise ZipkinServerError(f"mvn ran but {_m2_jar()} is missing")
    return _m2_jar()


LOOPBACK = "127.0.0.1"


@dataclass
class ZipkinServer:
    """One running Zipkin process (the JVM), owned by pid."""

    pid: int
    port: int
    log_path: str
    host: str = LOOPBACK  # what it listens on; reached on loopback unless only elsewhere

    @property
    def base_url(self) -> str:
        reach = LOOPBACK if self.host in (LOOPBACK, "0.0.0.0", "::", "localhost") else self.host
        return f"http://{f'[{reach}]' if ':' in reach else reach}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/api/v2/spans"

    def client(self) -> ZipkinClient:
        return ZipkinClient(self.base_url)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the JVM by its own pid, SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    done, _ = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # not our child: poll the pid instead
                    done = 0 if self.alive() else self.pid
                if done:
                    return
                time.sleep(0.1)


def start(port: int | None = None, jar: Path | None = None, log_path: Path | None = None,
          heap: str = "256m", health_timeout: float = 90, detach: bool = False,
          extra_args: list[str] | None = None, env: dict[str, str] | None = None,
          host: str = LOOPBACK) -> ZipkinServer:
    """Start Zipkin listening on ``host`` (loopback unless told otherwise: a local Zipkin
    holds every trace, for anyone who reaches it) and wait for /health UP. Raises
    ZipkinServerError. Without ``port``, a free one is chosen, and chosen again if another
    process takes it first."""
    for attempt in range(3):
        try:
            return _start(port, jar, log_path, heap, health_timeout, detach, extra_args, env,
                          host)
        except _PortTaken:
            if port is not None or attempt == 2:
                raise ZipkinServerError(f"port {port or 'chosen'} was taken by another "
                                        "process") from None
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    pass


def _start(port: int | None, jar: Path | None, log_path: Path | None, heap: str,
           health_timeout: float, detach: bool, extra_args: list[str] | None,
           env: dict[str, str] | None, host: str = LOOPBACK) -> ZipkinServer:
    java = shutil.which("java")
    if java is None:
        raise ZipkinServerError("java not found: Zipkin needs Java 17+")
    jar = jar or fetch_jar()
    port = port or free_port()
    log_path = log_path or (cache_dir() / f"zipkin-{port}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ)
    # AUTOCOMPLETE_KEYS: the tags Zipkin's UI offers as filters (mode, stream, error.type, ...)
    child_env.update({"QUERY_PORT": str(port), "STORAGE_TYPE": "mem",
                      "AUTOCOMPLETE_KEYS": ",".join(s.AUTOCOMPLETE_KEYS)})
    child_env.update(env or {})
    # Armeria's listening port, whole (Spring replaces a list, never one field of an item)
    bind = [f"--armeria.ports[0].port={port}", f"--armeria.ports[0].ip={host}",
            "--armeria.ports[0].protocols[0]=http"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [java, f"-Xmx{heap}", "-XX:+UseSerialGC", "-jar", str(jar), *bind,
             *(extra_args or [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env,
            start_new_session=detach)
    server = ZipkinServer(proc.pid, port, str(log_path), host)
    client = server.client()
    deadline = time.monotonic() + health_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-2000:]
            if "Address already in use" in tail:
                raise _PortTaken()
            raise ZipkinServerError(f"Zipkin exited with {proc.returncode}; log tail:\n{tail}")
        if client.health():
            if owns_listener(proc.pid, port) is False:  # someone else's server answered
                server.stop()
                raise _PortTaken()
            return server
        time.sleep(0.25)
    server.stop()
    raise ZipkinServerError(f"Zipkin did not report UP within {health_timeout:.0f} s "
                            f"(log: {log_path})")


# ---- a user-level server that outlives the command (cosyvoice-traced zipkin start|stop|status)

def _state_file() -> Path:
    return cache_dir() / "zipkin-server.json"


def running() -> ZipkinServer | None:
    """The server started by `zipkin start`, if it is still alive."""
    try:
        state = json.loads(_state_file().read_text())
        server = ZipkinServer(int(state["pid"]), int(state["port"]), state["log"],
                              str(state.get("host", LOOPBACK)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # any broken file
        return None
    return server if server.alive() else None


def start_detached(port: int = 9411, host: str = LOOPBACK) -> ZipkinServer:
    server = running()
    if server:
        return server
    server = start(port=port, detach=True, host=host)
    _state_file().write_text(json.dumps({"pid": server.pid, "port": server.port,
                                         "log": server.log_path, "host": server.host}))
    return server


def stop_detached() -> bool:
    server = running()
    if server is None:
        return False
    server.stop()
    _state_file().unlink(missing_ok=True)
    return True
