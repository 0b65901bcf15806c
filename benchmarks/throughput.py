"""Throughput under concurrency, traced vs untraced, with a baseline revision side by side.

    .venv/bin/python benchmarks/throughput.py [--clients 8] [--seconds 10] [--rounds 6]
                                              [--baseline REV | --no-baseline] [--zipkin]

Demo servers from one model and TODAY's ``examples/server.py`` and demo engine: untraced; traced
by this checkout (exporter none: the in-process cost of the whole stage tree, target >= 0.97 of
untraced); traced by the BASELINE revision's package (``--baseline REV``, default the latest
tag, else the revision in ``benchmarks/baseline.txt``: the previous landing), exported with
``git archive`` into a temporary folder and put first on ``PYTHONPATH``, so the only difference
between the two traced servers is the tracer's code; and with ``--zipkin``, this checkout
exporting to a real Zipkin on the same cores. Each round gives every server ``--seconds`` of
load from ``--clients`` threads sending the demo's request back to back, one server at a time,
the order rotating each round (noise spreads over all). Per round, each traced server's
completed requests over the untraced server's in the same round; printed: the median ratio
over the rounds and its range (this box is noisy: a difference smaller than the range is not a
difference).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests
from common import BIN, ROOT, free_port, start, stop, tiny_model

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def default_baseline() -> str:
    """The latest tag, else the previous landing named in benchmarks/baseline.txt."""
    tag = subprocess.run(["git", "describe", "--tags", "--abbrev=0"], cwd=ROOT,
                         capture_output=True, text=True)
    if tag.returncode == 0 and tag.stdout.strip():
        return tag.stdout.strip()
    return (ROOT / "benchmarks" / "baseline.txt").read_text().split()[0]


def export_package(rev: str, into: Path) -> str:
    """The revision's ``cosyvoice_otel`` package under ``into``; its commit id."""
    commit = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--baseline {rev}: not a revision of this repository")
    archive = subprocess.run(["git", "archive", commit.stdout.strip(), "cosyvoice_otel"],
                             cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return commit.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="the revision whose tracer runs beside this checkout's")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--zipkin", action="store_true",
                        help="also this checkout exporting to a real Zipkin on the same cores")
    args = parser.parse_args()
    model = tiny_model(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    app = ["python", "examples/server.py", "--model_dir", model, "--port"]
    traced = [str(BIN / "cosyvoice-traced"), "run", "--exporter", "none", "--", *app]
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "untraced": ([str(BIN / "python"), *app[1:]], env),
        "traced (this checkout)": (traced, env)}
    holder = tempfile.TemporaryDirectory(prefix="cosyvoice-otel-baseline-")
    if not args.no_baseline:
        rev = args.baseline or default_baseline()
        commit = export_package(rev, Path(holder.name))
        # the baseline's package first on the path: the launcher, the distro, the configurator
        # and the instrumentor all import from it (the same entry-point names, another code)
        paths = [holder.name, env.get("PYTHONPATH", "")]
        variants[f"traced (baseline {commit})"] = (
            traced, {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p)})
    zipkin = zipkin_server.start() if args.zipkin else None
    if zipkin is not None:
        variants["traced, real Zipkin"] = ([str(BIN / "cosyvoice-traced"), "run",
                                            "--zipkin-endpoint", zipkin.endpoint, "--", *app],
                                           env)
    servers, ports = [], {}
    try:
        for name, (argv, variant_env) in variants.items():
            port = free_port()
            servers.append(start([*argv, str(port)], port, variant_env))
            ports[name] = port
        names = list(ports)
        pids = dict(zip(names, (server.pid for server in servers), strict=True))
        rounds: list[dict[str, int]] = []
        cpu = {name: 0.0 for name in names}
        for port in ports.values():  # warm torch up on every server
            load(port, args.clients, 2.0)
        for index in range(args.rounds):
            order = names[index % len(names):] + names[:index % len(names)]
            done = {}
            for name in order:
                before = cpu_seconds(pids[name])
                done[name] = load(ports[name], args.clients, args.seconds)
                cpu[name] += cpu_seconds(pids[name]) - before
            rounds.append(done)
    finally:
        for server in servers:
            stop(server)
        if zipkin is not None:
            zipkin.stop()
        holder.cleanup()
    total = args.rounds * args.seconds
    print(f"{args.clients} clients, {args.rounds} rounds x {args.seconds:g} s per server (order "
          "rotating), demo request (sft, non-streaming), one machine")
    base = sum(r["untraced"] for r in rounds) / total

    def cpu_ms(name: str) -> float:  # the server's CPU per completed request (all threads)
        return 1000 * cpu[name] / max(1, sum(r[name] for r in rounds))

    print(f"{'untraced':32s} {base:7.2f} req/s   CPU {cpu_ms('untraced'):6.2f} ms/request")
    for name in names[1:]:
        ratios = sorted(r[name] / r["untraced"] for r in rounds if r["untraced"])
        rate = sum(r[name] for r in rounds) / total
        target = "  (target >= 0.97)" if name == "traced (this checkout)" else ""
        print(f"{name:32s} {rate:7.2f} req/s   CPU {cpu_ms(name):6.2f} ms/request (+"
              f"{cpu_ms(name) - cpu_ms('untraced'):.2f})   / untraced: median "
              f"{statistics.median(ratios):.3f} (rounds {ratios[0]:.3f}-{ratios[-1]:.3f})"
              f"{target}")


if __name__ == "__main__":
    main()
