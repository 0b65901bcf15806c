"""Our stage tree against its limit: the same tree written by hand with the plain SDK, in one run.

    .venv/bin/python benchmarks/handwritten.py [--requests 300] [--long]

The seed's "scheme 3" is spans written into the code: ``with tracer.start_as_current_span(
"acoustic_model")``. Here that is done ONCE, by hand, for the demo engine's sft request: the
same span names, nesting and attributes our instrumentor writes (inference with its mode,
stream, speed, text length, sentences, chunks and their events, audio seconds, RTF, first
chunk, end reason, in-flight, warm-up, the GenAI and model-configuration attributes; the text
normaliser; the frontend; model.tts; the LLM in its thread with its token count and rate;
token2wav, flow and vocoder with their sizes), as plain functions over the plain SDK. Each
step runs one request untraced, one under our instrumentor and one hand-written, in a rotating
order, in ONE process (the tiny v3 demo model, an SDK provider with no exporter, the threading
instrumentation for the LLM thread), so noise hits all three alike. Prints each median, each
overhead over untraced (median of the paired per-step differences) and ours / hand-written.
``--long``: a 10x longer request (more sentences, more hops).
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

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
from cosyvoice_otel.instrumentation.extractors import model_facts
from cosyvoice_otel.tools.demo import DEMO_TEXT


def shape_last(value) -> int:
    return int(value.shape[-1])


def handwritten(api, tracer) -> callable:
    """Patch the engine's methods with hand-written spans; returns the undo."""
    cls = type(api)
    frontend_cls, model_cls = type(api.frontend), type(api.model)
    llm_cls, flow_cls, hift_cls = type(api.model.llm), type(api.model.flow), type(api.model.hift)
    saved = [(cls, "inference_sft"), (frontend_cls, "text_normalize"),
             (frontend_cls, "frontend_sft"), (model_cls, "tts"), (model_cls, "token2wav"),
             (llm_cls, "inference"), (flow_cls, "inference"), (hift_cls, "inference")]
    originals = {(owner, name): owner.__dict__.get(name, getattr(owner, name))
                 for owner, name in saved}
    facts = model_facts(api)  # what a developer would compute once, at start
    seen = set()

    def inference_sft(self, tts_text, spk_id, stream=False, speed=1.0, text_frontend=True):
        first = ("sft", stream) not in seen
        seen.add(("sft", stream))
        attrs = {s.MODE: "sft", s.INFLIGHT: 1, s.WARMUP: first,
                 s.GENAI_OPERATION: "text_to_speech", s.GENAI_PROVIDER: "cosyvoice",
                 s.GENAI_OUTPUT_TYPE: "speech", s.GENAI_VOICE: spk_id, **facts,
                 s.TEXT_LENGTH: len(tts_text), s.STREAM: stream, s.SPEED: float(speed),
                 s.SAMPLE_RATE: self.sample_rate}
        with tracer.start_as_current_span(s.INFERENCE, attributes=attrs) as span:
            started = last = time.monotonic()
            chunks = samples = 0
            for out in originals[(cls, "inference_sft")](self, tts_text, spk_id, stream, speed,
                                                          text_frontend):
                now = time.monotonic()
                if chunks == 0:
                    span.set_attribute(s.FIRST_CHUNK_MS, round((now - started) * 1000, 3))
                n = shape_last(out["tts_speech"])
                seconds = n / self.sample_rate
                span.add_event(s.CHUNK_EVENT, {s.CHUNK_INDEX: chunks,
                                               s.CHUNK_AUDIO_SECONDS: round(seconds, 4),
                                               s.CHUNK_RTF: round((now - last) / seconds, 4)})
                chunks, samples, last = chunks + 1, samples + n, now
                yield out
            seconds = samples / self.sample_rate
            span.set_attributes({s.CHUNK_COUNT: chunks, s.AUDIO_SECONDS: round(seconds, 4),
                                 s.RTF: round((time.monotonic() - started) / seconds, 4),
                                 s.END_REASON: "completed"})

    def text_normalize(self, text, split=True, text_frontend=True):
        with tracer.start_as_current_span(s.TEXT_NORMALIZE,
                                          attributes={s.TEXT_LENGTH: len(text)}) as span:
            result = originals[(frontend_cls, "text_normalize")](self, text, split,
                                                                 text_frontend)
            if isinstance(result, list):
                span.set_attribute(s.SENTENCE_COUNT, len(result))
                trace.get_current_span()  # (the inference span gets it too, by hand below)
            return result

    def frontend_sft(self, tts_text, spk_id):
        with tracer.start_as_current_span("tts_frontend.sft", attributes={
                s.MODE: "sft", s.TEXT_LENGTH: len(tts_text)}):
            return originals[(frontend_cls, "frontend_sft")](self, tts_text, spk_id)

    def tts(self, *args, stream=False, **kwargs):
        with tracer.start_as_current_span(s.MODEL_TTS, attributes={s.STREAM: stream}) as span:
            chunks = 0
            for out in originals[(model_cls, "tts")](self, *args, stream=stream, **kwargs):
                chunks += 1
                yield out
            span.set_attribute(s.CHUNK_COUNT, chunks)

    hops = {"index": 0}

    def token2wav(self, *args, **kwargs):
        with tracer.start_as_current_span(s.TOKEN2WAV, attributes={
                s.CHUNK_INDEX: hops["index"], s.FINALIZE: bool(kwargs.get("finalize")),
                s.TOKEN_OFFSET: kwargs.get("token_offset", 0)}) as span:
            hops["index"] += 1
            speech = originals[(model_cls, "token2wav")](self, *args, **kwargs)
            span.set_attribute(s.HOP_AUDIO_SECONDS, round(shape_last(speech) / 24000, 4))
            return speech

    def llm_inference(self, *args, **kwargs):
        with tracer.start_as_current_span(s.ACOUSTIC_MODEL,
                                          attributes={s.LLM_BACKEND: "torch"}) as span:
            started, tokens = time.monotonic(), 0
            for token in originals[(llm_cls, "inference")](self, *args, **kwargs):
                tokens += 1
                yield token
            elapsed = time.monotonic() - started
            span.set_attributes({s.SPEECH_TOKENS: tokens,
                                 s.TOKENS_PER_SECOND: round(tokens / elapsed, 2)})

    def flow_inference(self, *args, **kwargs):
        with tracer.start_as_current_span(s.FLOW, attributes={
                s.SPEECH_TOKENS: shape_last(kwargs["token"])}) as span:
            result = originals[(flow_cls, "inference")](self, *args, **kwargs)
            span.set_attribute(s.MEL_FRAMES, shape_last(result[0]))
            return result

    def hift_inference(self, *args, **kwargs):
        with tracer.start_as_current_span(s.VOCODER, attributes={
                s.MEL_FRAMES: shape_last(kwargs["speech_feat"])}) as span:
            result = originals[(hift_cls, "inference")](self, *args, **kwargs)
            span.set_attribute(s.AUDIO_SECONDS, round(shape_last(result[0]) / 24000, 4))
            return result

    mine = {(cls, "inference_sft"): inference_sft, (frontend_cls, "text_normalize"):
            text_normalize, (frontend_cls, "frontend_sft"): frontend_sft,
            (model_cls, "tts"): tts, (model_cls, "token2wav"): token2wav,
            (llm_cls, "inference"): llm_inference, (flow_cls, "inference"): flow_inference,
            (hift_cls, "inference"): hift_inference}
    for (owner, name), function in mine.items():
        setattr(owner, name, function)

    def undo() -> None:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)

    return undo


def main() -> None:
    import make_tiny_model
    import torch
    from cosyvoice.cli.cosyvoice import AutoModel

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="per setting")
    parser.add_argument("--long", action="store_true", help="a 10x longer request")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core for torch: the other for the LLM thread, less noise
    model = AutoModel(model_dir=make_tiny_model.make(tempfile.mkdtemp(), 3))
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    ThreadingInstrumentor().instrument()
    tracer = provider.get_tracer("bench")
    hand_tracer = provider.get_tracer("handwritten")
    text = DEMO_TEXT * (10 if args.long else 1)

    def request() -> float:
        started = time.perf_counter()
        with tracer.start_as_current_span("request"):
            list(model.inference_sft(text, "中文女"))
        return time.perf_counter() - started

    for _ in range(20):  # warm-up: torch's first calls, the allocator
        request()
    inst = CosyVoiceInstrumentor()
    undo: list = []
    setups = {
        "untraced": (lambda: None, lambda: None),
        "ours": (lambda: inst.instrument(tracer_provider=provider, gpu_timing="off"),
                 inst.uninstrument),
        "handwritten": (lambda: undo.append(handwritten(model, hand_tracer)),
                        lambda: undo.pop()()),
    }
    names = list(setups)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.requests):
        # One request of each setting per step, in a rotating order: slow drifts of the
        # machine (and whatever the previous setting left for the GC) hit all three alike;
        # overheads are medians of the per-step differences (paired), not of the raw times.
        for name in names[i % 3:] + names[:i % 3]:
            on, off = setups[name]
            on()
            times[name].append(request())
            off()
    base = times["untraced"]
    print(f"request: {'long (10x text)' if args.long else 'the demo default'}; "
          f"{len(base)} steps, one request per setting each, rotating order")
    overhead = {}
    for key in names:
        median = statistics.median(times[key]) * 1e3
        diffs = [(t - b) * 1e3 for t, b in zip(times[key], base, strict=True)]
        overhead[key] = statistics.median(diffs)
        q1, _, q3 = statistics.quantiles(diffs, n=4)
        print(f"{key:12s} median {median:8.2f} ms   overhead {overhead[key]:+7.3f} ms "
              f"(paired, IQR {q1:+.2f}..{q3:+.2f})   ratio "
              f"{(statistics.median(base) * 1e3 + overhead[key]) / (statistics.median(base) * 1e3):.4f}")
    if overhead["handwritten"] > 0:
        print(f"ours / hand-written overhead: {overhead['ours'] / overhead['handwritten']:.2f}x")


if __name__ == "__main__":
    main()
