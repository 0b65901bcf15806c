"""Request latency with metrics on vs off (issue 11), side by side in one run.

    .venv/bin/python benchmarks/metrics_cost.py [--requests 60]

Five demo servers from one model (exporter none everywhere: this measures the in-process cost
of recording, not the export): untraced; traced at sampling 1.0 with metrics off and with
``--metrics prometheus``; traced at sampling 0.1 without keep-errors, metrics off (90% of the
requests are not recorded at all) and on (every request is recorded so it can be measured).
The demo's default request (sft, non-streaming) goes to each in turn, interleaved; /metrics is
scraped once a second during the run, as a Prometheus would (more often than the usual 15 s).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import requests
from common import BIN, free_port, median_ms, start, stop, tiny_model

from cosyvoice_otel.tools.demo import DEMO_TEXT

VARIANTS = (
    ("untraced", None),
    ("traced, metrics off", ["--sampling-rate", "1.0"]),
    ("traced, metrics prometheus", ["--sampling-rate", "1.0", "--metrics", "prometheus"]),
    ("rate 0.1, metrics off", ["--sampling-rate", "0.1", "--no-keep-errors"]),
    ("rate 0.1, metrics prometheus", ["--sampling-rate", "0.1", "--no-keep-errors",
                                      "--metrics", "prometheus"]),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    model = tiny_model(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    servers, ports, scrape_urls = [], {}, []
    for name, flags in VARIANTS:
        port = free_port()
        app = ["examples/server.py", "--port", str(port), "--model_dir", model]
        if flags is None:
            argv = [str(BIN / "python"), *app]
        else:
            extra = []
            if "--metrics" in flags:
                metrics_port = free_port()
                extra = ["--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)]
                scrape_urls.append(f"http://127.0.0.1:{metrics_port}/metrics")
            argv = [str(BIN / "cosyvoice-traced"), "run", "--exporter", "none", *flags, *extra,
                    "--", "python", *app]
        servers.append(start(argv, port, env))
        ports[name] = port
    done = threading.Event()

    def scraper() -> None:
        while not done.wait(1.0):
            for url in scrape_urls:
                requests.get(url, timeout=5, headers={"Accept": "application/openmetrics-text"})

    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    params = {"tts_text": DEMO_TEXT, "spk_id": "中文女"}
    times: dict[str, list[float]] = {name: [] for name in ports}
    try:
        for i in range(args.requests + 3):
            for name, port in ports.items():
                t0 = time.perf_counter()
                resp = requests.get(f"http://127.0.0.1:{port}/inference_sft", params=params,
                                    timeout=60)
                elapsed = time.perf_counter() - t0
                assert resp.status_code == 200 and resp.content
                if i >= 3:  # the first requests warm torch up
                    times[name].append(elapsed)
    finally:
        done.set()
        thread.join(10)
        for server in servers:
            stop(server)
    base = median_ms(times["untraced"])
    print(f"requests per server: {args.requests} (interleaved), exporter none, /metrics "
          "scraped every second")
    for name, _ in VARIANTS:
        ms = median_ms(times[name])
        print(f"{name:32s} median {ms:8.2f} ms   / untraced {ms / base:.4f}")
    for off, on in (("traced, metrics off", "traced, metrics prometheus"),
                    ("rate 0.1, metrics off", "rate 0.1, metrics prometheus")):
        print(f"metrics on / off ({off.split(',')[0]}): "
              f"{median_ms(times[on]) / median_ms(times[off]):.4f}")


if __name__ == "__main__":
    main()
