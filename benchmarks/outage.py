"""Zipkin away must not hurt the app: latency (up / refused / black-holed), keep-errors
overhead, and the app's memory during a long outage.

    .venv/bin/python benchmarks/outage.py latency [--requests 40]
    .venv/bin/python benchmarks/outage.py memory [--minutes 10]

latency: five demo FastAPI servers from one model, requests interleaved: traced to a live
Zipkin; traced to a refused port; traced to a black-holed port (a socket that accepts and never
answers); and at sampling 0.1 with and without keep-errors (to a live Zipkin). Medians and
ratios; targets: down/up <= 1.02; keep-errors overhead reported.

memory: one traced demo server whose Zipkin is refused, a steady request loop, the app's RSS
sampled every 10 s (from /proc); the spool cap bounds the disk, the buffers bound the memory.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import time
from pathlib import Path

import requests
from common import BIN, free_port, median_ms, start, stop, tiny_model

from cosyvoice_otel.tools import zipkin_server
from cosyvoice_otel.tools.demo import DEMO_TEXT


def traced(port: int, model: str, endpoint: str, *flags: str) -> list[str]:
    return [str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", endpoint,
            "--service-name", "bench-outage", *flags, "--", "python", "examples/server.py",
            "--port", str(port), "--model_dir", model]


def call(port: int, sampled: bool) -> float:
    """sampled: the client's traceparent says sampled; else no context: the app decides."""
    headers = {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"} \
        if sampled else {}
    t0 = time.perf_counter()
    resp = requests.get(f"http://127.0.0.1:{port}/inference_sft", timeout=60, headers=headers,
                        params={"tts_text": DEMO_TEXT, "spk_id": "中文女"})
    assert resp.status_code == 200 and resp.content
    return time.perf_counter() - t0


def latency(n: int) -> None:
    model = tiny_model(3)
    zipkin = zipkin_server.start()
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    refused = f"http://127.0.0.1:{free_port()}/api/v2/spans"
    black_hole = f"http://127.0.0.1:{hole.getsockname()[1]}/api/v2/spans"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    spool = Path(".cache/bench-spool")
    variants = {
        "zipkin up": (zipkin.endpoint, ["--spool-dir", str(spool / "up")]),
        "zipkin refused": (refused, ["--spool-dir", str(spool / "refused")]),
        "zipkin black-holed": (black_hole, ["--spool-dir", str(spool / "hole")]),
        "R=0.1 keep-errors": (zipkin.endpoint, ["--sampling-rate", "0.1"]),
        "R=0.1 plain ratio": (zipkin.endpoint, ["--sampling-rate", "0.1", "--no-keep-errors"]),
    }
    servers, ports = [], {}
    try:
        for name, (endpoint, flags) in variants.items():
            port = free_port()
            servers.append(start(traced(port, model, endpoint, *flags), port, env))
            ports[name] = port
        times: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(n + 3):
            for name, port in ports.items():
                # the up/down rows export every request; the R=0.1 rows get new roots
                elapsed = call(port, sampled=not name.startswith("R="))
                if i >= 3:
                    times[name].append(elapsed)
    finally:
        for server in servers:
            stop(server)
        zipkin.stop()
        hole.close()
    med = {name: median_ms(v) for name, v in times.items()}
    print(f"requests per server: {n} (interleaved), demo request (sft, {len(DEMO_TEXT)} chars); "
          "up/refused/black-holed: every request sampled by the client; R=0.1 rows: no incoming "
          "context, the app's ratio decides")
    for name in variants:
        print(f"{name:22s} median {med[name]:8.2f} ms")
    for name in ("zipkin refused", "zipkin black-holed"):
        print(f"{name} / zipkin up: {med[name] / med['zipkin up']:.4f} (target <= 1.02)")
    print(f"keep-errors / plain ratio at R=0.1: "
          f"{med['R=0.1 keep-errors'] / med['R=0.1 plain ratio']:.4f}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory(minutes: float) -> None:
    model = tiny_model(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    port = free_port()
    refused = f"http://127.0.0.1:{free_port()}/api/v2/spans"
    server = start(traced(port, model, refused, "--spool-dir", ".cache/bench-spool/memory",
                          "--spool-max-mb", "16"), port, env)
    samples: list[tuple[float, int]] = []
    count = 0
    try:
        started = time.monotonic()
        next_sample = started
        while time.monotonic() - started < minutes * 60:
            # traceparent flags 01: every request sampled and exported (into the outage)
            requests.get(f"http://127.0.0.1:{port}/inference_sft", timeout=60, headers={
                "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"},
                params={"tts_text": DEMO_TEXT, "spk_id": "中文女"})
            count += 1
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - started, rss_kib(server.pid)))
                next_sample += 10
    finally:
        stop(server)
    print(f"outage of {minutes:g} min at steady load: {count} requests, "
          f"{count / (minutes * 60):.1f} req/s")
    first_minute = [kib for t, kib in samples if t < 60]
    rest = [kib for t, kib in samples if t >= 60] or first_minute
    print(f"app RSS: first minute max {max(first_minute) / 1024:.1f} MiB, after it "
          f"min {min(rest) / 1024:.1f} / max {max(rest) / 1024:.1f} MiB, last "
          f"{samples[-1][1] / 1024:.1f} MiB")
    print("samples (s, MiB): " + ", ".join(f"{t:.0f}:{kib / 1024:.0f}" for t, kib in samples))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["latency", "memory"])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    latency(args.requests) if args.what == "latency" else memory(args.minutes)


if __name__ == "__main__":
    main()
