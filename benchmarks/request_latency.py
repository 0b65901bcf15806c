"""Traced vs untraced request latency on the demo FastAPI server, and stage-span coverage.

    .venv/bin/python benchmarks/request_latency.py [--requests 40]

Starts the demo server four times from the same model (plain `python examples/server.py`;
under `cosyvoice-traced run` at sampling 1.0 exporting to a real Zipkin; traced with exporter
none, and also without stage spans, to split the cost into export, stage spans and the stock
HTTP instrumentation), sends the demo's
default request (sft, the demo text, non-streaming) to each in turn (interleaved, so noise hits
all alike), and prints the median latencies and their ratio (target <= 1.02). Then reads the
traced requests back from Zipkin and prints the share of the request's SERVER span covered by
`cosyvoice.inference` and the share of `cosyvoice.inference` covered by its stage children.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time

import requests
from common import BIN, free_port, median_ms, start, stop, tiny_model

from cosyvoice_otel.tools import zipkin_server
from cosyvoice_otel.tools.demo import DEMO_TEXT

# the demo text's two sentences, each ten times as long (commas do not split sentences)
LONG_TEXT = (", ".join(["Hello from the CosyVoice demo engine"] * 10) + ". "
             + "，".join(["你好，这是一次被追踪的语音合成"] * 10) + "。")


def covered_share(spans: list[dict], parent: dict) -> float:
    """Share of ``parent``'s time covered by the union of its direct children."""
    kids = sorted((s["timestamp"], s["timestamp"] + s["duration"]) for s in spans
                  if s.get("parentId") == parent["id"] and "http" not in s["name"])
    covered, end = 0, parent["timestamp"]
    for start_us, stop_us in kids:
        start_us, stop_us = max(start_us, end), min(stop_us, parent["timestamp"] +
                                                    parent["duration"])
        if stop_us > start_us:
            covered += stop_us - start_us
            end = stop_us
    return covered / parent["duration"] if parent["duration"] else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--long", action="store_true",
                        help="a request ~10x longer: the demo's two sentences, each ten times "
                             "longer (same spans, ten times the tokens and audio)")
    args = parser.parse_args()
    text = LONG_TEXT if args.long else DEMO_TEXT
    # the long text is over the seed's 200-character limit: not an error for this benchmark
    limits = ["--input-limits", "off"] if args.long else []
    model = tiny_model(3)
    zipkin = zipkin_server.start()
    plain_port, traced_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    plain = start([str(BIN / "python"), "examples/server.py", "--port", str(plain_port),
                   "--model_dir", model], plain_port, env)
    traced = start([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint,
                    "--service-name", "bench", "--sampling-rate", "1.0", *limits, "--", "python",
                    "examples/server.py", "--port", str(traced_port), "--model_dir", model],
                   traced_port, env)
    variants = {"untraced": plain_port, "traced": traced_port}
    servers = [plain, traced]
    # exporter none: the in-process cost; and without stage spans: the stock instrumentation's
    for name, flags in (("spans-only", []), ("http-only", ["--no-stage-spans"])):
        port = free_port()
        servers.append(start([str(BIN / "cosyvoice-traced"), "run", "--exporter", "none",
                              *flags, *limits, "--", "python", "examples/server.py", "--port", str(port),
                              "--model_dir", model], port, env))
        variants[name] = port
    params = {"tts_text": text, "spk_id": "中文女"}
    times: dict[str, list[float]] = {name: [] for name in variants}
    trace_ids = []
    try:
        for i in range(args.requests + 3):
            for name, port in variants.items():
                trace_id = secrets.token_hex(16)
                headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
                t0 = time.perf_counter()
                resp = requests.get(f"http://127.0.0.1:{port}/inference_sft", params=params,
                                    headers=headers, timeout=60)
                elapsed = time.perf_counter() - t0
                assert resp.status_code == 200 and resp.content
                if i >= 3:  # the first requests warm torch up
                    times[name].append(elapsed)
                    if name == "traced":
                        trace_ids.append(trace_id)
    finally:
        for server in servers:
            stop(server)
    untraced_ms, traced_ms = median_ms(times["untraced"]), median_ms(times["traced"])
    print(f"requests per server: {args.requests} (interleaved), demo request: sft, "
          f"{len(text)} characters, non-streaming")
    print(f"untraced median {untraced_ms:8.2f} ms")
    print(f"traced   median {traced_ms:8.2f} ms   ratio {traced_ms / untraced_ms:.4f} "
          f"(target <= {1.01 if args.long else 1.02})")
    for name, what in (("spans-only", "all spans, exporter none"),
                       ("http-only", "stock HTTP/thread spans only, exporter none")):
        ms = median_ms(times[name])
        print(f"{what:44s} median {ms:8.2f} ms   ratio {ms / untraced_ms:.4f}")
    client = zipkin.client()
    request_share, stage_share = [], []
    for trace_id in trace_ids:
        spans = client.wait_for_trace(trace_id, lambda sp: any(
            s["name"] == "cosyvoice.inference" for s in sp) and any(
            s.get("kind") == "SERVER" for s in sp), timeout=20)
        server = next(s for s in spans if s.get("kind") == "SERVER")
        inference = next(s for s in spans if s["name"] == "cosyvoice.inference")
        request_share.append(inference["duration"] / server["duration"])
        stage_share.append(covered_share(spans, inference))
    zipkin.stop()
    print(f"share of the SERVER span covered by cosyvoice.inference: median "
          f"{100 * sorted(request_share)[len(request_share) // 2]:.1f}% (target >= 95%)")
    print(f"share of cosyvoice.inference covered by its stage children: median "
          f"{100 * sorted(stage_share)[len(stage_share) // 2]:.1f}%")


if __name__ == "__main__":
    main()
