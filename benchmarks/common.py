"""Helpers shared by the benchmarks: start apps, wait for ports, medians."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from cosyvoice_otel.tools.net import PortWaitError, free_port, wait_for_port  # noqa: E402,F401 - free_port for the benchmarks


def start(argv: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env or dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, timeout=120)
    except PortWaitError as exc:
        raise SystemExit(f"{argv}: {exc}") from None
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def tiny_model(version: int = 3) -> str:
    import make_tiny_model

    path = ROOT / ".cache" / f"bench-model-v{version}"
    if not (path / f"cosyvoice{'' if version == 1 else version}.yaml").is_file():
        make_tiny_model.make(str(path), version)
    return str(path)
