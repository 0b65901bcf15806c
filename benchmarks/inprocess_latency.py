"""The demo request traced and untraced in ONE process, without HTTP: the stage spans' own cost.

    .venv/bin/python benchmarks/inprocess_latency.py [--rounds 6] [--per-round 15]

The tiny v3 demo model (written to a temporary directory), the demo's default request (sft,
non-streaming) under a parent span, an SDK provider with no exporter and the threading
instrumentation; rounds alternate untraced / instrumented so noise hits both alike. Prints
the medians and their difference. Compare with request_latency.py's server figures: what the
server adds beyond this is HTTP, thread hops and export.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from common import ROOT  # noqa: F401 - puts examples/ on sys.path
from opentelemetry import trace
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
from cosyvoice_otel.tools.demo import DEMO_TEXT


def main() -> None:
    import make_tiny_model
    from cosyvoice.cli.cosyvoice import AutoModel

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=15)
    args = parser.parse_args()
    model = AutoModel(model_dir=make_tiny_model.make(tempfile.mkdtemp(), 3))
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    ThreadingInstrumentor().instrument()
    tracer = provider.get_tracer("bench")

    def request() -> float:
        started = time.perf_counter()
        with tracer.start_as_current_span("request"):
            list(model.inference_sft(DEMO_TEXT, "中文女"))
        return time.perf_counter() - started

    for _ in range(20):  # warm-up: torch's first calls, allocator
        request()
    inst = CosyVoiceInstrumentor()
    plain: list[float] = []
    traced: list[float] = []
    for _ in range(args.rounds):
        plain += [request() for _ in range(args.per_round)]
        inst.instrument(tracer_provider=provider)
        traced += [request() for _ in range(args.per_round)]
        inst.uninstrument()
    p, t = statistics.median(plain) * 1e3, statistics.median(traced) * 1e3
    print(f"requests: {len(plain)} untraced, {len(traced)} traced (interleaved rounds)")
    print(f"untraced median {p:7.2f} ms")
    print(f"traced   median {t:7.2f} ms   difference {t - p:+.2f} ms, ratio {t / p:.4f}")


if __name__ == "__main__":
    main()
