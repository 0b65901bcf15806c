"""Stage time on a GPU, three ways, in one run: wall time, CUDA-event time, synchronised time.

    .venv-cosyvoice/bin/python examples/make_real_model.py /tmp/tiny-v2 --version 2
    .venv-cosyvoice/bin/python benchmarks/gpu_timing.py --model-dir /tmp/tiny-v2 [--requests 20]

Upstream's REAL engine (the environment's ``cosyvoice``, see examples/real_engine.py) on CUDA,
its default request (sft; then zero-shot streaming), traced in-process into memory. Rounds
alternate the four settings so noise hits all alike:

* untraced;
* traced, ``--gpu-timing off``: stage spans end when the Python call returns (wall time);
* traced, ``--gpu-timing events``: the same spans, plus ``cosyvoice.gpu.ms`` from CUDA events
  resolved off the request path;
* traced, ``--cuda-sync``: each stage span ends after ``torch.cuda.synchronize()``.

Prints, per stage: median wall ms (events run), median GPU event ms, median synced ms (sync
run); and per setting: median request latency and its ratio to untraced. Without CUDA it says
so and exits 2 (the event path is unit-tested with a stand-in CUDA API: tests/unit/
test_gpu_timing.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))

SETTINGS = ("untraced", "wall", "events", "sync")
STAGES = ("cosyvoice.inference", "tts_frontend.text_normalize", "model.tts", "acoustic_model",
          "token2wav", "flow", "vocoder")
TEXT = ("Hello there, this is the real engine on a GPU. It speaks a few sentences so that the "
        "stages have some work to do, and the streamed answer comes in several hops.")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--requests", type=int, default=20, help="per setting")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import real_engine

    model = real_engine.load(args.model_dir)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure here (see the module docstring)")
        return 2
    from opentelemetry import trace
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
    from cosyvoice_otel.instrumentation import gpu_timing as gt
    from cosyvoice_otel.schema import GPU_MS
    from cosyvoice_otel.sdk import lifecycle

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    ThreadingInstrumentor().instrument()
    lifecycle.install_span_clock()
    tracer = provider.get_tracer("bench")
    tf = real_engine.text_frontend()
    from cosyvoice.utils.file_utils import load_wav  # noqa: F401 - the engine's own loader
    prompt = torch.randn(1, 16000 * 3) * 0.1

    def request(kind: str) -> float:
        torch.cuda.synchronize()
        started = time.perf_counter()
        with tracer.start_as_current_span("request"):
            if kind == "sft":
                list(model.inference_sft(TEXT, model.list_available_spks()[0], text_frontend=tf))
            else:
                list(model.inference_zero_shot(TEXT, "a prompt", prompt, stream=True,
                                               text_frontend=tf))
        torch.cuda.synchronize()
        return time.perf_counter() - started

    for kind in ("sft", "zero_shot"):
        for _ in range(3):
            request(kind)  # warm-up: kernels, allocator
    latency: dict[tuple[str, str], list[float]] = defaultdict(list)
    stage_ms: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for setting in SETTINGS:
            inst = None
            if setting != "untraced":
                gt._TIMER = None
                inst = CosyVoiceInstrumentor()
                inst.instrument(tracer_provider=provider, cuda_sync=setting == "sync",
                                gpu_timing="events" if setting == "events" else "off")
            for kind in ("sft", "zero_shot"):
                memory.clear()
                for _ in range(args.requests // args.rounds or 1):
                    latency[(setting, kind)].append(request(kind))
                timer = gt.active_timer()
                if timer is not None:
                    timer.drain(30)
                for span in memory.get_finished_spans():
                    if span.name in STAGES:
                        ms = (span.end_time - span.start_time) / 1e6
                        stage_ms[(setting, kind, span.name)].append(ms)
                        if GPU_MS in span.attributes:
                            stage_ms[("gpu", kind, span.name)].append(span.attributes[GPU_MS])
            if inst is not None:
                inst.uninstrument()
    device = torch.cuda.get_device_name(0)
    print(f"device: {device}; torch {torch.__version__}; model {args.model_dir}")
    for kind in ("sft", "zero_shot"):
        print(f"\n{kind}: per stage, median ms")
        print(f"{'stage':30s} {'wall':>9s} {'gpu events':>11s} {'synced':>9s}")
        for stage in STAGES:
            cells = []
            for key in (("events", kind, stage), ("gpu", kind, stage), ("sync", kind, stage)):
                values = stage_ms.get(key)
                cells.append(f"{statistics.median(values):9.2f}" if values else f"{'-':>9s}")
            print(f"{stage:30s} {cells[0]} {cells[1]:>11s} {cells[2]}")
        base = statistics.median(latency[("untraced", kind)])
        print(f"{'request latency':30s} " + "  ".join(
            f"{s}={statistics.median(latency[(s, kind)]) * 1e3:.1f} ms "
            f"({statistics.median(latency[(s, kind)]) / base:.3f})" for s in SETTINGS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
