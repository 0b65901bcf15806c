"""Attribute extractors: read sizes, counts and durations from a stage's call. Never content.

An extractor has three hooks, each optional: ``start(stage, call)`` before the call,
``item(stage, item)`` per generator item, ``end(stage, result)`` after (``result`` is None for a
generator). They run only when the span is recording, inside the wrapper's try. Text is
measured (length), never copied.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import wave
from collections.abc import Generator
from typing import Any

from opentelemetry import trace

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation.stage_span import Call, StageSpan, _no_rewrite, note_error
from cosyvoice_otel.sdk import redaction

_TEXT_ARGS = ("tts_text", "prompt_text", "instruct_text", "text")


def _remember_texts(stage: StageSpan, call: Call) -> None:
    """Register the request's own texts so the exporter masks them anywhere in this trace."""
    redaction.remember(stage.span.get_span_context().trace_id,
                       (call.arg(name) for name in _TEXT_ARGS))


class Extractor:
    name = "none"
    rewrite = _no_rewrite

    def start(self, stage: StageSpan, call: Call) -> None:
        pass

    def item(self, stage: StageSpan, item: Any) -> None:
        pass

    def end(self, stage: StageSpan, result: Any) -> None:
        pass


def _shape_last(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    return int(shape[-1]) if shape else None


def _output_length(result: Any) -> int | None:
    """Last dimension of a stage's output tensor (or of the first tensor of a tuple)."""
    return _shape_last(result[0] if isinstance(result, tuple) else result)


def _speech_samples(item: Any) -> int:
    speech = item.get("tts_speech") if isinstance(item, dict) else None
    return _shape_last(speech) or 0


class Inference(Extractor):
    name = "inference"

    def start(self, stage: StageSpan, call: Call) -> None:
        _remember_texts(stage, call)
        span = stage.span
        text = call.arg("tts_text")
        if isinstance(text, str):
            span.set_attribute(s.TEXT_LENGTH, len(text))
            if stage.options.hash_salt:
                digest = hmac.new(stage.options.hash_salt, text.encode(), hashlib.sha256)
                span.set_attribute(s.TEXT_HASH, digest.hexdigest()[:16])
            limit = stage.options.max_text_chars
            if limit and len(text) > limit:
                stage.mark_error("text_too_long", "input limit exceeded",
                                 {s.TEXT_LENGTH: len(text), "limit.characters": limit})
        elif isinstance(text, Generator):  # streaming text input: no length to tell yet
            span.set_attribute(s.TEXT_STREAMED, True)
        _speaker_cache(stage, call)
        span.set_attribute(s.STREAM, bool(call.arg("stream", False)))
        span.set_attribute(s.SPEED, float(call.arg("speed", 1.0)))
        rate = getattr(call.instance, "sample_rate", None)
        if not isinstance(rate, int):
            rate = None  # a fork's odd attribute must not break the end's arithmetic
        else:
            span.set_attribute(s.SAMPLE_RATE, rate)
        stage.counters.update(chunks=0, samples=0, rate=rate)

    def item(self, stage: StageSpan, item: Any) -> None:
        counters = stage.counters
        if counters["chunks"] == 0:
            stage.span.set_attribute(s.FIRST_CHUNK_MS,
                                     round((time.monotonic() - stage.started) * 1000, 3))
        counters["chunks"] += 1
        counters["samples"] += _speech_samples(item)

    def end(self, stage: StageSpan, result: Any) -> None:
        counters = stage.counters
        span = stage.span
        span.set_attribute(s.CHUNK_COUNT, counters["chunks"])
        rate = counters.get("rate")
        seconds = counters["samples"] / rate if rate else 0.0
        span.set_attribute(s.AUDIO_SECONDS, round(seconds, 4))
        if seconds > 0:
            span.set_attribute(s.RTF, round((time.monotonic() - stage.started) / seconds, 4))


def _speaker_cache(stage: StageSpan, call: Call) -> None:
    """Which cached speaker (``add_zero_shot_spk``) served the request: its id, chosen by the
    operator; with it the prompt-audio stages are rightly absent."""
    spk_id = call.arg("zero_shot_spk_id")
    if isinstance(spk_id, str) and spk_id:
        stage.span.set_attribute(s.ZERO_SHOT_SPK_ID, spk_id)


class SpeakerAdd(Extractor):
    name = "speaker_add"

    def start(self, stage: StageSpan, call: Call) -> None:
        _remember_texts(stage, call)
        _speaker_cache(stage, call)


class TextStream(Extractor):
    """The frontend's generator of text tokens for streaming text input (``tts_text`` given as
    a generator): counts the tokens; each text piece is registered for redaction as it
    arrives, since no piece is known when the request starts."""

    name = "text_stream"

    def rewrite(self, call: Call) -> None:
        source = call.arg("text_generator")
        trace_id = trace.get_current_span().get_span_context().trace_id
        if source is None or not trace_id:
            return

        def registering() -> Generator:
            for piece in source:
                try:
                    redaction.remember(trace_id, (piece,))
                except Exception as exc:  # noqa: BLE001
                    note_error("text_stream.remember", exc)
                yield piece

        call.replace("text_generator", registering())

    def start(self, stage: StageSpan, call: Call) -> None:
        stage.counters["tokens"] = 0

    def item(self, stage: StageSpan, item: Any) -> None:
        stage.counters["tokens"] += _shape_last(item) or 1

    def end(self, stage: StageSpan, result: Any) -> None:
        stage.span.set_attribute(s.TEXT_TOKENS, stage.counters["tokens"])


class TextNormalize(Extractor):
    name = "text_normalize"

    def start(self, stage: StageSpan, call: Call) -> None:
        _remember_texts(stage, call)
        text = call.arg("text")
        if isinstance(text, str):
            stage.span.set_attribute(s.TEXT_LENGTH, len(text))
        elif isinstance(text, Generator):
            stage.span.set_attribute(s.TEXT_STREAMED, True)

    def end(self, stage: StageSpan, result: Any) -> None:
        if isinstance(result, list):  # split=True: the sentences the inference will loop over
            stage.span.set_attribute(s.SENTENCE_COUNT, len(result))
            inference = stage.parent.find(s.INFERENCE) if stage.parent else None
            if inference is not None and not inference.ended:
                inference.span.set_attribute(s.SENTENCE_COUNT, len(result))


class Frontend(Extractor):
    name = "frontend"

    def start(self, stage: StageSpan, call: Call) -> None:
        _remember_texts(stage, call)
        _speaker_cache(stage, call)
        text = call.arg("tts_text")
        if isinstance(text, str):
            stage.span.set_attribute(s.TEXT_LENGTH, len(text))


def describe_audio(value: Any) -> dict[str, Any]:
    """Duration, rate, channels of a WAV path/file object or a tensor (assumed 16 kHz mono)."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        channels = int(shape[0]) if len(shape) > 1 else 1
        return {s.PROMPT_SECONDS: round(int(shape[-1]) / 16000, 4), s.PROMPT_SAMPLE_RATE: 16000,
                s.PROMPT_CHANNELS: channels}
    if isinstance(value, (str, os.PathLike)) or hasattr(value, "read"):
        position = value.tell() if hasattr(value, "tell") else None
        try:
            with wave.open(os.fspath(value) if isinstance(value, os.PathLike) else value,
                           "rb") as wav:
                rate, frames, channels = (wav.getframerate(), wav.getnframes(),
                                          wav.getnchannels())
        finally:
            if position is not None:
                value.seek(position)
        return {s.PROMPT_SECONDS: round(frames / rate, 4) if rate else 0.0,
                s.PROMPT_SAMPLE_RATE: rate, s.PROMPT_CHANNELS: channels}
    return {}


class Audio(Extractor):
    name = "audio"

    def start(self, stage: StageSpan, call: Call) -> None:
        value = call.first()
        try:
            attrs = describe_audio(value)
        except (wave.Error, OSError, EOFError, ValueError):
            attrs = {}  # not a WAV we can read: the span still times the stage
        stage.span.set_attributes(attrs)
        seconds, limit = attrs.get(s.PROMPT_SECONDS), stage.options.max_prompt_seconds
        if limit and seconds is not None and seconds > limit:
            values = {s.PROMPT_SECONDS: seconds, "limit.seconds": limit}
            stage.mark_error("invalid_input_duration", "input limit exceeded", values)
            inference = stage.parent.find(s.INFERENCE) if stage.parent else None
            if inference is not None and not inference.ended:
                inference.mark_error("invalid_input_duration")


class ModelTTS(Extractor):
    name = "model_tts"

    def start(self, stage: StageSpan, call: Call) -> None:
        stage.span.set_attribute(s.STREAM, bool(call.arg("stream", False)))
        stage.counters.update(chunks=0, token2wav=0)

    def item(self, stage: StageSpan, item: Any) -> None:
        stage.counters["chunks"] += 1

    def end(self, stage: StageSpan, result: Any) -> None:
        stage.span.set_attribute(s.CHUNK_COUNT, stage.counters["chunks"])


class Token2Wav(Extractor):
    name = "token2wav"

    def start(self, stage: StageSpan, call: Call) -> None:
        tts = stage.parent.find(s.MODEL_TTS) if stage.parent else None
        index = 0
        if tts is not None:
            index = tts.counters.get("token2wav", 0)
            tts.counters["token2wav"] = index + 1
        stage.span.set_attribute(s.CHUNK_INDEX, index)
        stage.span.set_attribute(s.FINALIZE, bool(call.arg("finalize", False)))


class Acoustic(Extractor):
    name = "acoustic"

    def start(self, stage: StageSpan, call: Call) -> None:
        stage.counters["tokens"] = 0
        # upstream's load_vllm gives the LLM a vLLM engine: tokens then come from its steps
        backend = "vllm" if getattr(call.instance, "vllm", None) is not None else "torch"
        stage.span.set_attribute(s.LLM_BACKEND, backend)

    def item(self, stage: StageSpan, item: Any) -> None:
        stage.counters["tokens"] += 1

    def end(self, stage: StageSpan, result: Any) -> None:
        tokens = stage.counters["tokens"]
        elapsed = time.monotonic() - stage.started
        stage.span.set_attribute(s.SPEECH_TOKENS, tokens)
        stage.span.set_attribute(s.TOKENS_PER_SECOND, round(tokens / elapsed, 2) if elapsed else 0.0)


class Flow(Extractor):
    name = "flow"

    def start(self, stage: StageSpan, call: Call) -> None:
        tokens = _shape_last(call.arg("token"))
        if tokens is not None:
            stage.span.set_attribute(s.SPEECH_TOKENS, tokens)

    def end(self, stage: StageSpan, result: Any) -> None:
        frames = _output_length(result)
        if frames is not None:
            stage.span.set_attribute(s.MEL_FRAMES, frames)


class Vocoder(Extractor):
    name = "vocoder"

    def start(self, stage: StageSpan, call: Call) -> None:
        frames = _shape_last(call.arg("speech_feat"))
        if frames is not None:
            stage.span.set_attribute(s.MEL_FRAMES, frames)

    def end(self, stage: StageSpan, result: Any) -> None:
        samples = _output_length(result)
        rate = getattr(stage.instance, "sampling_rate", None)
        if samples is not None and rate:
            stage.span.set_attribute(s.AUDIO_SECONDS, round(samples / rate, 4))


class Asr(Extractor):
    """FunASR-shaped results: ``[{'key': ..., 'text': ...}, ...]``."""

    name = "asr"

    def end(self, stage: StageSpan, result: Any) -> None:
        texts = [r.get("text", "") for r in result if isinstance(r, dict)] \
            if isinstance(result, list) else []
        length = sum(len(t) for t in texts if isinstance(t, str))
        stage.span.set_attribute(s.ASR_TEXT_LENGTH, length)
        if length == 0:
            stage.mark_error("asr_empty_result", "ASR returned empty result",
                             {"asr.results": len(texts)})


EXTRACTORS: dict[str, Extractor] = {e.name: e for e in (
    Extractor(), Inference(), TextNormalize(), Frontend(), Audio(), ModelTTS(), Token2Wav(),
    Acoustic(), Flow(), Vocoder(), Asr(), SpeakerAdd(), TextStream())}
