"""A real Apache Kafka broker for the tests: KRaft, one node, from Maven Central's jars.

``fetch_jars()`` resolves ``org.apache.kafka:kafka_2.13`` with its dependencies into the project
cache (``mvn dependency:copy-dependencies``; .ci/setup calls it). ``KafkaBroker`` formats a log
directory, starts ``kafka.Kafka`` on free loopback ports, and can be killed (SIGKILL) and started
again on the same ports and data, as a broker crash and restart.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from cosyvoice_otel.settings import cache_dir
from cosyvoice_otel.tools.net import free_port

from .helpers import maven_jars

KAFKA_VERSION = "4.1.1"
POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cosyvoice-otel</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
  </dependencies>
</project>
"""


class KafkaError(Exception):
    pass


def jar_dir() -> Path:
    return Path(cache_dir()) / f"kafka-{KAFKA_VERSION}" / "libs"


def fetch_jars(timeout: float = 900) -> Path:
    """The broker's class path folder, resolved with Maven the first time."""
    return maven_jars(POM, jar_dir(), KAFKA_VERSION, f"kafka_2.13 {KAFKA_VERSION}", KafkaError,
                      timeout)


def _cluster_id() -> str:
    """A KRaft cluster id (16 bytes, URL-safe base64). One in 64 would start with '-', which
    Kafka's storage tool reads as an option ("argument --cluster-id/-t: expected one
    argument"): the first byte's top six bits are chosen so the first character is a letter."""
    raw = bytearray(uuid.uuid4().bytes)
    raw[0] = (raw[0] % 26 << 2) | (raw[0] & 0b11)  # first base64 digit: 0-25, 'A'-'Z'
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


class KafkaBroker:
    def __init__(self, workdir: Path | None = None) -> None:
        self.libs = fetch_jars()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-"))
        self.port, self.controller_port = free_port(), free_port()
        self.config = self.workdir / "server.properties"
        self.config.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:"
            f"{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            f"log.dirs={self.workdir / 'data'}", "num.partitions=1",
            "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1", "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true", ""]))
        self._java(["kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(),
                    "-c", str(self.config)], check=True)
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, args: list[str], check: bool = False) -> subprocess.CompletedProcess:
        out = subprocess.run(["java", "-Xmx512m", "-cp", f"{self.libs}/*", *args],
                             capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise KafkaError(f"{args[0]} failed: {(out.stdout + out.stderr)[-2000:]}")
        return out

    def start(self, timeout: float = 90) -> None:
        self.log = open(self.workdir / "broker.log", "ab")  # noqa: SIM115 - kept for the process
        self.proc = subprocess.Popen(
            ["java", "-Xmx512m", "-XX:+UseSerialGC", "-cp", f"{self.libs}/*", "kafka.Kafka",
             str(self.config)], stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KafkaError(f"the broker exited: {self.output()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise KafkaError(f"the broker did not listen within {timeout:.0f} s: "
                         f"{self.output()[-3000:]}")

    def output(self) -> str:
        return (self.workdir / "broker.log").read_text(errors="replace")

    def kill(self) -> None:
        """A crash: SIGKILL, no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
