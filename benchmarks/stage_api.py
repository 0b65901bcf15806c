"""What ``cosyvoice_otel.stage`` costs where it does nothing, and where it records.

    .venv/bin/python benchmarks/stage_api.py [--number 200000]

Per call, in one process: a bare function; ``with stage(...)`` and an ``@stage`` function when
tracing is off (the app not started by the launcher: the instrumentor never activated the
API); the same inside a request while tracing is on, beside a hand-written
``tracer.start_as_current_span`` (the SDK span itself, no exporter).
"""

from __future__ import annotations

import argparse
import timeit

from common import ROOT  # noqa: F401 - puts the project on sys.path
from opentelemetry.sdk.trace import TracerProvider

import cosyvoice_otel
from cosyvoice_otel.instrumentation import api
from cosyvoice_otel.instrumentation.options import Options


def per_call_us(function, number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=200000)
    args = parser.parse_args()

    def bare() -> int:
        return 1

    @cosyvoice_otel.stage("emotion_tagging")
    def decorated() -> int:
        return 1

    def with_block() -> int:
        with cosyvoice_otel.stage("emotion_tagging"):
            return 1

    off = {"bare function": bare, "@stage, tracing off": decorated,
           "with stage(), tracing off": with_block}
    for label, function in off.items():
        print(f"{label:34s} {per_call_us(function, args.number):8.3f} us")

    provider = TracerProvider()
    tracer = provider.get_tracer("bench")
    api.activate(provider, Options(stage_spans=True, gradio_bridge=False, cuda_sync=False,
                                   max_text_chars=0, max_prompt_seconds=0, hash_salt=None))

    def handwritten() -> int:
        with tracer.start_as_current_span("emotion_tagging"):
            return 1

    number = max(1, args.number // 20)
    with tracer.start_as_current_span("request"):
        on = {"with stage(), in a request": with_block, "@stage, in a request": decorated,
              "hand-written span, in a request": handwritten}
        for label, function in on.items():
            print(f"{label:34s} {per_call_us(function, number):8.3f} us")
    with_block_outside = per_call_us(with_block, args.number)
    print(f"{'with stage(), on, outside requests':34s} {with_block_outside:8.3f} us")


if __name__ == "__main__":
    main()
