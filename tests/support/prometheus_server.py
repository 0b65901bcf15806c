"""A real Prometheus (Debian's ``prometheus`` package, installed by .ci/setup) for the tests:
started on a free loopback port with a config written by the test, stopped at the end."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from cosyvoice_otel.tools.net import free_port


class PrometheusError(Exception):
    pass


def binary(name: str = "prometheus") -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                  else None)


class Prometheus:
    def __init__(self, config: str, workdir: Path) -> None:
        exe = binary()
        if exe is None:
            raise PrometheusError("prometheus is not installed (apt-get install prometheus; "
                                  ".ci/setup does)")
        self.port = free_port()
        config_path = workdir / "prometheus.yml"
        config_path.write_text(config)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the server writes it all its life
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--enable-feature=exemplar-storage",
             "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self.output()[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready in 30 s: {self.output()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: Any) -> Any:
        resp = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        resp.raise_for_status()
        body = resp.json()
        assert body["status"] == "success", body
        return body["data"]

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
