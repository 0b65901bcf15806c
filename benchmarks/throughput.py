"""Throughput under concurrency: 8 clients in parallel on the demo server, traced vs untraced.

    .venv/bin/python benchmarks/throughput.py [--clients 8] [--seconds 10] [--rounds 3]

Three demo servers from one model: untraced; traced with exporter none (the in-process cost of
the full stage tree: target traced/untraced >= 0.97); traced exporting to a real Zipkin on the
same machine (reported beside it: encoding, sending and Zipkin's own ingest share the cores).
Each round gives every server ``--seconds`` of load from ``--clients`` threads sending the
demo's default request back to back (one server at a time, servers in turn, so noise spreads
over all); completed requests per second are summed over the rounds.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import requests
from common import BIN, free_port, start, stop, tiny_model

from cosyvoice_otel.tools import zipkin_server
from cosyvoice_otel.tools.demo import DEMO_TEXT


def load(port: int, clients: int, seconds: float) -> int:
    """Requests completed by ``clients`` threads in ``seconds``."""
    done = [0] * clients
    deadline = time.monotonic() + seconds
    params = {"tts_text": DEMO_TEXT, "spk_id": "中文女"}

    def client(index: int) -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            resp = session.get(f"http://127.0.0.1:{port}/inference_sft", params=params,
                               timeout=120)
            assert resp.status_code == 200 and resp.content
            if time.monotonic() <= deadline:
                done[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = tiny_model(3)
    zipkin = zipkin_server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    app = ["python", "examples/server.py", "--model_dir", model, "--port"]
    variants = {"untraced": [str(BIN / "python"), *app[1:]],
                "traced, exporter none": [str(BIN / "cosyvoice-traced"), "run", "--exporter",
                                          "none", "--", *app],
                "traced, real Zipkin": [str(BIN / "cosyvoice-traced"), "run",
                                        "--zipkin-endpoint", zipkin.endpoint, "--", *app]}
    servers, ports = [], {}
    for name, argv in variants.items():
        port = free_port()
        servers.append(start([*argv, str(port)], port, env))
        ports[name] = port
    counts = {name: 0 for name in ports}
    try:
        for port in ports.values():  # warm torch up on every server
            load(port, args.clients, 2.0)
        for _ in range(args.rounds):
            for name, port in ports.items():
                counts[name] += load(port, args.clients, args.seconds)
    finally:
        for server in servers:
            stop(server)
        zipkin.stop()
    total = args.rounds * args.seconds
    base = counts["untraced"] / total
    print(f"{args.clients} clients, {args.rounds} rounds x {args.seconds:g} s per server, demo "
          "request (sft, non-streaming)")
    for name in ports:
        rate = counts[name] / total
        target = "  (target >= 0.97)" if name == "traced, exporter none" else ""
        print(f"{name:24s} {rate:7.2f} req/s   / untraced {rate / base:.3f}{target}")


if __name__ == "__main__":
    main()
