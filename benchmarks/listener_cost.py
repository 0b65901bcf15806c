"""What the listener's figures cost, per chunk and per request, beside the stages they annotate.

    .venv/bin/python benchmarks/listener_cost.py [--repeat 2000]

Per streamed chunk (``Inference.item``): the playback model's step and the output digest's
SHA-256 of the chunk's float32 samples (a 0.48 s hop at 24 kHz: the demo's and upstream v2's
first hop, 25 tokens at 25 Hz is 1 s: both sizes). Per request: the first chunk's critical path
(a partition of a 12-stage timeline), the input fingerprint (sft; zero-shot with a 5 s and a 30 s
prompt tensor at 16 kHz), the request's start. Per stage: joining the request's timeline.
Beside them, the stages they annotate: the median per-hop ``token2wav`` (flow + vocoder) and the
median streamed ``cosyvoice.inference`` of the demo engine (tiny v2 model, in process, one torch
thread): a tiny model's stages are far shorter than a real one's, so the shares printed are
UPPER bounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types

from common import ROOT  # noqa: F401 - puts examples/ on sys.path


def per_call(fn, repeat: int) -> float:
    """Median microseconds of one call, over 5 batches of ``repeat`` calls."""
    batches = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        batches.append((time.perf_counter() - started) / repeat * 1e6)
    return statistics.median(batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from cosyvoice_otel.instrumentation import listener
    from cosyvoice_otel.instrumentation.stage_span import Call

    rows = []
    for label, samples in (("0.48 s hop", 11520), ("1 s hop", 24000)):
        chunk = torch.rand(1, samples) - 0.5
        play = listener.Playback(0.0, 0.1)
        clock = [0.0]

        def step(play=play, chunk=chunk, clock=clock) -> None:
            clock[0] += 0.01
            play.arrive(clock[0], 0.48)

        digest = listener.OutputDigest()
        rows.append((f"per chunk: playback step ({label})", per_call(step, args.repeat)))
        rows.append((f"per chunk: output digest ({label})",
                     per_call(lambda d=digest, c=chunk: d.add(c), args.repeat // 4)))

    def stage(part, started, finished):
        return types.SimpleNamespace(part=part, started=started, finished=finished)

    timeline = [stage(p, i * 0.01, i * 0.01 + 0.005) for i, p in enumerate(
        ("text", "text", "prompt_audio", "prompt_audio", "prompt_audio", "text", "llm", "llm",
         "flow", "vocoder", "flow", "vocoder"))]
    owner = types.SimpleNamespace(request_span=None, span=object(), started=0.0,
                                  timeline=timeline)
    rows.append(("per request: first chunk's parts (12 stages)",
                 per_call(lambda: listener.first_chunk(owner, 0.2, 0.0, 0.0), args.repeat)))
    secret = b"0123456789abcdef0123456789abcdef"
    sft = Call(None, (), {"tts_text": "Hello there, a sentence of the usual length. 你好。",
                          "spk_id": "中文女", "stream": True}, {})
    rows.append(("per request: fingerprint, sft",
                 per_call(lambda: listener.fingerprint(secret, sft, "sft"), args.repeat)))
    for seconds in (5, 30):
        prompt = torch.rand(1, 16000 * seconds) - 0.5
        zero = Call(None, (), {"tts_text": "Hello there.", "prompt_text": "a prompt",
                               "prompt_speech_16k": prompt}, {})
        rows.append((f"per request: fingerprint, zero-shot {seconds} s prompt",
                     per_call(lambda z=zero: listener.fingerprint(secret, z, "zero_shot"),
                              max(10, args.repeat // 50))))
    rows.append(("per request: request start",
                 per_call(lambda: listener.request_start(owner), args.repeat)))
    line: list = []
    rows.append(("per stage: join the timeline",
                 per_call(lambda: (line.append(owner), line.clear()), args.repeat)))

    hop_ms, request_ms, chunks = stage_times()
    print(f"{'work':52s} {'us':>9s}")
    for name, us in rows:
        print(f"{name:52s} {us:9.2f}")
    print(f"beside: demo engine (tiny v2, in process): token2wav per hop {hop_ms:.2f} ms; "
          f"streamed request {request_ms:.1f} ms over {chunks} chunks")
    per_chunk = sum(us for name, us in rows if name.startswith("per chunk") and "0.48" in name)
    per_request = sum(us for name, us in rows
                      if name.startswith("per request") and "prompt" not in name)
    print(f"per chunk {per_chunk:.1f} us = {100 * per_chunk / 1000 / hop_ms:.2f}% of a hop; "
          f"per request (sft) {per_request + chunks * per_chunk:.1f} us = "
          f"{100 * (per_request + chunks * per_chunk) / 1000 / request_ms:.3f}% of the request")


def stage_times() -> tuple[float, float, int]:
    """Median per-hop token2wav and streamed request times of the demo engine, traced in
    process (in-memory exporter)."""
    import make_tiny_model
    from opentelemetry import trace
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    ThreadingInstrumentor().instrument()
    CosyVoiceInstrumentor().instrument(tracer_provider=provider)
    from cosyvoice.cli.cosyvoice import AutoModel

    model = AutoModel(model_dir=make_tiny_model.make(tempfile.mkdtemp(), 2))
    text = "One streamed sentence that is long enough to need several hops of audio."
    for _ in range(3):
        list(model.inference_sft(text, "中文女", stream=True))
    memory.clear()
    for _ in range(20):
        list(model.inference_sft(text, "中文女", stream=True))
    spans = memory.get_finished_spans()
    hops = [(s.end_time - s.start_time) / 1e6 for s in spans if s.name == "token2wav"]
    requests = [s for s in spans if s.name == "cosyvoice.inference"]
    return (statistics.median(hops),
            statistics.median((s.end_time - s.start_time) / 1e6 for s in requests),
            int(requests[0].attributes["cosyvoice.chunk.count"]))


if __name__ == "__main__":
    main()
