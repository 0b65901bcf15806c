"""A real OpenSearch 2.19.6 node for the durable-store tests, from Maven Central's jars.

No distribution archive is served here, only the server modules: ``fetch_jars()`` resolves
``org.opensearch:opensearch`` and the two modules Zipkin's Elasticsearch storage needs
(``transport-netty4-client``: the HTTP layer; ``analysis-common``: the analyzers of Zipkin's
index templates) with Maven into the cache (.ci/setup calls it). ``OpenSearchNode`` lays out a
node home the way the archive does (``lib/``, ``modules/<name>/`` with a plugin descriptor,
``config/``), single-node discovery on free loopback ports, and starts
``org.opensearch.bootstrap.OpenSearch``. Two things the archive would bring are written here:
each module's ``plugin-descriptor.properties`` (its class name read from the module's jar) and a
``plugin-security.policy`` granting the module what it asks (AllPermission: a test node on
loopback). OpenSearch refuses to run as root: as root the node runs as ``nobody`` (setpriv), in
a home under the temp directory that it can read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

from cosyvoice_otel.settings import cache_dir
from cosyvoice_otel.tools.net import free_port

from .helpers import maven_jars

OPENSEARCH_VERSION = "2.19.6"  # the newest 2.x for Java 17 the proxy serves
MODULES = {"transport-netty4": "transport-netty4-client", "analysis-common": "analysis-common"}
MODULE_JARS = ("netty-", "transport-netty4-client-", "analysis-common-")
POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cosyvoice-otel</groupId><artifactId>opensearch-node</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.opensearch</groupId><artifactId>opensearch</artifactId>
      <version>{OPENSEARCH_VERSION}</version></dependency>
    <dependency><groupId>org.opensearch</groupId><artifactId>opensearch-plugin-classloader</artifactId>
      <version>{OPENSEARCH_VERSION}</version></dependency>
    <dependency><groupId>org.opensearch.plugin</groupId><artifactId>transport-netty4-client</artifactId>
      <version>{OPENSEARCH_VERSION}</version></dependency>
    <dependency><groupId>org.opensearch.plugin</groupId><artifactId>analysis-common</artifactId>
      <version>{OPENSEARCH_VERSION}</version></dependency>
    <!-- the node logs through log4j-core, which the server declares but does not pull in -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>2.25.4</version></dependency>
  </dependencies>
</project>
"""
LOG4J = """status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
"""
NOBODY = 65534


class OpenSearchError(Exception):
    pass


def jar_dir() -> Path:
    return Path(cache_dir()) / f"opensearch-{OPENSEARCH_VERSION}" / "jars"


def fetch_jars(timeout: float = 900) -> Path:
    """The node's jars (server, modules and their dependencies), resolved the first time."""
    return maven_jars(POM, jar_dir(), OPENSEARCH_VERSION, f"opensearch {OPENSEARCH_VERSION}",
                      OpenSearchError, timeout)


def _plugin_class(jar: Path) -> str:
    """The module's plugin class: the one ``*Plugin.class`` at the top of its package."""
    with zipfile.ZipFile(jar) as archive:
        names = [n for n in archive.namelist() if n.endswith("Plugin.class") and "$" not in n]
    if len(names) != 1:
        raise OpenSearchError(f"{jar.name}: expected one plugin class, found {names}")
    return names[0].removesuffix(".class").replace("/", ".")


def _copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # same file system: no copy of 80 MB per node
    except OSError:
        shutil.copy2(source, target)


class OpenSearchNode:
    def __init__(self, heap: str = "512m") -> None:
        jars = fetch_jars()
        self.home = Path(tempfile.mkdtemp(prefix="opensearch-"))
        self.port, self.transport_port = free_port(), free_port()
        for sub in ("lib", "bin", "plugins", "config", "data", "logs"):
            (self.home / sub).mkdir()
        for jar in sorted(jars.glob("*.jar")):
            if not jar.name.startswith(MODULE_JARS):
                _copy(jar, self.home / "lib" / jar.name)
        for module, artifact in MODULES.items():
            folder = self.home / "modules" / module
            folder.mkdir(parents=True)
            wanted = ("netty-", artifact) if module == "transport-netty4" else (artifact,)
            for jar in sorted(jars.glob("*.jar")):
                if jar.name.startswith(wanted):
                    _copy(jar, folder / jar.name)
            main = next(folder.glob(f"{artifact}-*.jar"))
            (folder / "plugin-descriptor.properties").write_text(
                f"description={module}\nversion={OPENSEARCH_VERSION}\nname={module}\n"
                f"classname={_plugin_class(main)}\njava.version=11\n"
                f"opensearch.version={OPENSEARCH_VERSION}\n")
            (folder / "plugin-security.policy").write_text(
                "grant {\n  permission java.security.AllPermission;\n};\n")
        (self.home / "config" / "log4j2.properties").write_text(LOG4J)
        (self.home / "config" / "jvm.options").write_text("")
        (self.home / "config" / "opensearch.yml").write_text("\n".join([
            "cluster.name: cosyvoice-otel-test", "node.name: node-1",
            "network.host: 127.0.0.1", f"http.port: {self.port}",
            f"transport.port: {self.transport_port}", "discovery.type: single-node",
            f"path.data: {self.home / 'data'}", f"path.logs: {self.home / 'logs'}",
            # a test machine's disk may be fuller than OpenSearch's defaults allow
            "cluster.routing.allocation.disk.threshold_enabled: false", ""]))
        self.root = os.geteuid() == 0
        if self.root:
            os.chmod(self.home, 0o755)
            for path in self.home.rglob("*"):
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            for sub in ("data", "logs", "config"):  # config: the node writes its keystore
                os.chown(self.home / sub, NOBODY, NOBODY)
        self.heap = heap
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        home = self.home
        argv = ["java", f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseSerialGC",
                f"-Dopensearch.path.home={home}", f"-Dopensearch.path.conf={home / 'config'}",
                "-Dopensearch.distribution.type=tar", "-Dopensearch.bundled_jdk=false",
                "-cp", f"{home / 'lib'}/*", "org.opensearch.bootstrap.OpenSearch"]
        if self.root:
            argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    *argv]
        self.log = open(home / "node.log", "ab")  # noqa: SIM115 - kept for the process
        self.proc = subprocess.Popen(argv, cwd=home, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OpenSearchError(f"the node exited: {self.output()[-3000:]}")
            if self.health() in ("green", "yellow"):
                return
            time.sleep(0.5)
        self.stop()
        raise OpenSearchError(f"the node was not up within {timeout:.0f} s: "
                              f"{self.output()[-3000:]}")

    def health(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}/_cluster/health", timeout=2) as resp:
                return json.load(resp).get("status")
        except (OSError, ValueError):
            return None

    def output(self) -> str:
        return (self.home / "node.log").read_text(errors="replace")

    def stop(self) -> None:
        """Killed, not shut down: its data is thrown away with it (a clean shutdown takes
        OpenSearch half a minute)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)
