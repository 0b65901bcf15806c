"""Attribute extractors: read sizes, counts and durations from a stage's call. Never content.

Each is an ``stage_span.Extractor`` (hooks ``rewrite``, ``start``, ``first_item``, ``item``,
``end``, ``close``, each optional); they run only when the span is recording, inside the
wrapper's try. Text is measured (length), never copied; the request's own texts, and a speaker
id the loaded model does not list, are registered for masking (``cosyvoice_otel.masking``).
What a stage produced (chunks, audio seconds, tokens) is written in ``close``, which runs on
EVERY end: a stage that failed or was abandoned still says what it produced (0 if nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import numbers
import os
import sys
import threading
import time
import wave
import weakref
from collections.abc import Generator
from typing import Any

from opentelemetry import trace

from cosyvoice_otel import masking
from cosyvoice_otel import schema as s
from cosyvoice_otel.errors import note_error
from cosyvoice_otel.instrumentation import audio_figures, listener
from cosyvoice_otel.instrumentation.stage_span import (
    Call,
    Extractor,
    StageSpan,
    span_attributes,
    span_clock_at,
)

_TEXT_ARGS = ("tts_text", "prompt_text", "instruct_text", "text")


def _trace_id(stage: StageSpan) -> int:
    return stage.span.get_span_context().trace_id


def _remember_texts(stage: StageSpan, call: Call) -> None:
    """Register the request's own texts so the exporter masks them anywhere in this trace."""
    masking.remember(_trace_id(stage), (call.arg(name) for name in _TEXT_ARGS))


def _shape_last(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    return int(shape[-1]) if shape else None


def _output_length(result: Any) -> int | None:
    """Last dimension of a stage's output tensor (or of the first tensor of a tuple)."""
    return _shape_last(result[0] if isinstance(result, tuple) else result)


def _speech_samples(item: Any) -> int:
    speech = item.get("tts_speech") if isinstance(item, dict) else None
    return _shape_last(speech) or 0


class _Engine:
    """Process-wide facts for attribution: requests in flight, (mode, stream) pairs seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inflight = 0
        self.warm: set[tuple[Any, bool]] = set()

    def enter(self, key: tuple[Any, bool]) -> tuple[int, bool]:
        with self.lock:
            self.inflight += 1
            first = key not in self.warm
            self.warm.add(key)
            return self.inflight, first

    def leave(self) -> None:
        with self.lock:
            self.inflight -= 1


ENGINE = _Engine()
_CONFIG_NAMES = ("cosyvoice3.yaml", "cosyvoice2.yaml", "cosyvoice.yaml")
_MODEL_FACTS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _is_script(module: Any) -> bool:
    return type(module).__name__ in ("RecursiveScriptModule", "ScriptModule")


def model_facts(api: Any) -> dict[str, Any]:
    """The configuration behind a number, read from the loaded model object (never guessed):
    version by class, fp16, what load_jit / load_trt / load_vllm replaced, torch, device, and a
    short hash of the model's config file. Computed once per model object."""
    try:
        return _MODEL_FACTS[api]
    except (KeyError, TypeError):
        pass
    model = getattr(api, "model", None)
    llm, flow = getattr(model, "llm", None), getattr(model, "flow", None)
    names = [klass.__name__ for klass in type(api).__mro__]
    version = next((v for v, n in ((3, "CosyVoice3"), (2, "CosyVoice2"), (1, "CosyVoice"))
                    if n in names), None)
    facts: dict[str, Any] = {
        s.FP16: bool(getattr(model, "fp16", getattr(api, "fp16", False))),
        s.LOAD_VLLM: getattr(llm, "vllm", None) is not None,
        s.LOAD_JIT: any(_is_script(getattr(part, attr, None)) for part, attr in (
            (flow, "encoder"), (llm, "llm"), (llm, "text_encoder"))),
        s.LOAD_TRT: getattr(getattr(flow, "decoder", None), "estimator_engine", None) is not None,
    }
    if version is not None:
        facts[s.MODEL_VERSION] = version
    torch = sys.modules.get("torch")
    if torch is not None:
        facts[s.TORCH_VERSION] = str(getattr(torch, "__version__", "?"))
        cuda = _cuda_device(torch)
        facts[s.DEVICE] = cuda or "cpu"
    model_dir = getattr(api, "model_dir", None)
    if isinstance(model_dir, str):
        facts[s.GENAI_MODEL] = os.path.basename(os.path.normpath(model_dir))
        for name in _CONFIG_NAMES:
            path = os.path.join(model_dir, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    facts[s.CONFIG_HASH] = hashlib.sha256(f.read()).hexdigest()[:12]
                break
    try:
        _MODEL_FACTS[api] = facts
    except TypeError:  # not weak-referenceable: computed again next time
        pass
    return facts


def _cuda_device(torch: Any) -> str | None:
    try:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken driver is "no GPU" for attribution
        return None


def _speakers(instance: Any) -> Any:
    """The speaker ids the loaded model lists (presets and ``add_zero_shot_spk`` ones), from
    the API object (``api.frontend.spk2info``) or the frontend itself (``spk2info``)."""
    spk2info = getattr(instance, "spk2info", None)
    if spk2info is None:
        spk2info = getattr(getattr(instance, "frontend", None), "spk2info", None)
    return spk2info if isinstance(spk2info, dict) else ()


def _speaker(stage: StageSpan, call: Call, name: str) -> str | None:
    """A speaker id argument when the model lists it; an id it does not list is a string the
    client chose (upstream's FastAPI server passes any ``spk_id`` on): masked wherever it
    appears in this trace (the engine's KeyError quotes it), and None."""
    value = call.arg(name)
    if not isinstance(value, str) or not value:
        return None
    if value in _speakers(call.instance):
        return value
    masking.remember(_trace_id(stage), (value,))
    return None


def _voice(stage: StageSpan, mode: Any, call: Call) -> str:
    """gen_ai.speech.voice: the cached speaker, a preset speaker id the model lists, ``custom``
    for one it does not list, else the mode. Never audio, never a client's string."""
    if isinstance(call.arg("zero_shot_spk_id"), str) and call.arg("zero_shot_spk_id"):
        return _speaker(stage, call, "zero_shot_spk_id") or "custom"
    if mode in ("sft", "instruct") and isinstance(call.arg("spk_id"), str):
        return _speaker(stage, call, "spk_id") or "custom"
    return str(mode)


class Inference(Extractor):
    name = "inference"

    def start(self, stage: StageSpan, call: Call) -> None:
        span = stage.span
        mode = span_attributes(span).get(s.MODE)
        stream = bool(call.arg("stream", False))
        inflight, warmup = ENGINE.enter((mode, stream))
        stage.counters["inflight"] = True  # close() leaves exactly once
        span.set_attributes({s.INFLIGHT: inflight, s.WARMUP: warmup,
                             s.GENAI_OPERATION: "text_to_speech",
                             s.GENAI_PROVIDER: "cosyvoice", s.GENAI_OUTPUT_TYPE: "speech",
                             **model_facts(call.instance)})
        _remember_texts(stage, call)
        span.set_attribute(s.GENAI_VOICE, _voice(stage, mode, call))
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
        span.set_attribute(s.STREAM, stream)
        speed = call.arg("speed", 1.0)
        if isinstance(speed, numbers.Real) and not isinstance(speed, bool):  # numpy's too
            span.set_attribute(s.SPEED, float(speed))  # a fork's odd value: no figure, no error
        rate = getattr(call.instance, "sample_rate", None)
        if not isinstance(rate, int):
            rate = None  # a fork's odd attribute must not break the end's arithmetic
        else:
            span.set_attribute(s.SAMPLE_RATE, rate)
        stage.counters.update(chunks=0, samples=0, rate=rate, last=stage.started,
                              input_tokens=0, output_tokens=0, digest=listener.OutputDigest(),
                              playback=listener.Playback(stage.options.playback_buffer_s,
                                                         stage.options.stall_threshold_s),
                              stream=stream)
        stage.timeline = []  # the stages under this request add themselves (listener.py)
        stage.counters["began"], stage.counters["queued"] = listener.request_start(stage)
        # last, and on their own: an odd argument (a speed that is no number, a prompt that
        # cannot be read) costs the request its fingerprint, never its other figures
        spoken = listener.language(text)
        if spoken is not None:
            span.set_attribute(s.GENAI_INPUT_LANGUAGE, spoken)
        secret = stage.options.fingerprint_secret
        if secret is not None:
            try:
                key = listener.fingerprint(secret, call, mode)
            except Exception as exc:  # noqa: BLE001
                note_error("input fingerprint", exc)
                key = None
            if key is not None:
                span.set_attribute(s.INPUT_FINGERPRINT, key)

    def item(self, stage: StageSpan, item: Any) -> None:
        counters = stage.counters
        now = time.monotonic()
        span = stage.span
        if counters["chunks"] == 0:
            span.set_attribute(s.FIRST_CHUNK_MS, round((now - stage.started) * 1000, 3))
            span.set_attributes(listener.first_chunk(stage, now, counters["began"],
                                                     counters["queued"]))
        samples = _speech_samples(item)
        if isinstance(item, dict):
            counters["digest"].add(item.get("tts_speech"))
        rate = counters["rate"]
        if rate and samples:  # per chunk: its audio and its RTF (warm-up shows in the first)
            seconds = samples / rate
            event = {s.CHUNK_INDEX: counters["chunks"], s.CHUNK_AUDIO_SECONDS: round(seconds, 4),
                     s.CHUNK_RTF: round((now - counters["last"]) / seconds, 4)}
            # every app of upstream's shape sends each chunk as it comes (stream=False too:
            # one chunk per sentence), so each chunk's gap is what its listener hears
            playback = counters["playback"]
            gap = playback.arrive(now, seconds)
            event[s.CHUNK_GAP_MS] = round(gap * 1000, 3)
            if gap > playback.threshold:  # a stall: where did the wait go?
                part = listener.late_part(stage, counters["last"], now)
                event[s.CHUNK_LATE_PART] = part
                playback.blame(gap, part)
            # stamped when the chunk arrived (a stall's attribution runs first, and a busy
            # machine may pause the thread): the event's time is the gap's own instant
            span.add_event(s.CHUNK_EVENT, event, timestamp=span_clock_at(span, now))
        timeline = stage.timeline
        if timeline is not None and len(timeline) > 64:  # a long stream: forget ended hops
            listener.forget_before(timeline, counters["last"])
        counters["last"] = now
        counters["chunks"] += 1
        counters["samples"] += samples

    def end(self, stage: StageSpan, result: Any) -> None:
        counters = stage.counters
        seconds = _audio_seconds(counters)
        if seconds > 0:
            stage.span.set_attribute(s.RTF, round((time.monotonic() - stage.started) / seconds,
                                                  4))

    def close(self, stage: StageSpan, reason: str) -> None:
        """Every end: completed, interrupted (abandoned mid-stream) or error."""
        if stage.counters.pop("inflight", False):
            ENGINE.leave()
        counters = stage.counters
        span = stage.span
        span.set_attribute(s.END_REASON, reason)
        span.set_attribute(s.CHUNK_COUNT, counters.get("chunks", 0))
        span.set_attribute(s.AUDIO_SECONDS, round(_audio_seconds(counters), 4))
        for key, attr in (("input_tokens", s.GENAI_INPUT_TOKENS),
                          ("output_tokens", s.GENAI_OUTPUT_TOKENS),
                          ("output_tokens", s.GENAI_AUDIO_OUTPUT_TOKENS)):
            if counters.get(key):
                span.set_attribute(attr, counters[key])
        playback = counters.get("playback")
        chunks = counters.get("chunks", 0)
        # a request heard chunk by chunk: streamed, or several sentences (one chunk each)
        if playback is not None and chunks and (counters.get("stream") or chunks > 1):
            span.set_attributes(playback.attributes())
        digest = counters.get("digest")
        if digest is not None:
            span.set_attributes(digest.attributes())
        stage.timeline = None  # the stages it held are done with


def _audio_seconds(counters: dict[str, Any]) -> float:
    rate = counters.get("rate")
    return counters.get("samples", 0) / rate if rate else 0.0


def _speaker_cache(stage: StageSpan, call: Call) -> None:
    """Which cached speaker (``add_zero_shot_spk``) served the request: its id, chosen by the
    operator; with it the prompt-audio stages are rightly absent. An id the model does not list
    is not written (and is masked)."""
    spk_id = _speaker(stage, call, "zero_shot_spk_id")
    if spk_id is not None:
        stage.span.set_attribute(s.ZERO_SHOT_SPK_ID, spk_id)


class SpeakerAdd(Extractor):
    """``add_zero_shot_spk(prompt_text, prompt_wav, zero_shot_spk_id)``: the id is the one the
    speaker is being cached under (not listed yet: the call is what adds it)."""

    name = "speaker_add"

    def start(self, stage: StageSpan, call: Call) -> None:
        _remember_texts(stage, call)
        spk_id = call.arg("zero_shot_spk_id")
        if isinstance(spk_id, str) and spk_id:
            stage.span.set_attribute(s.ZERO_SHOT_SPK_ID, spk_id)


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
                    masking.remember(trace_id, (piece,))
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
        request = _request(stage)
        if request is not None and "input_tokens" in request.counters:
            request.counters["input_tokens"] += stage.counters["tokens"]


def _request(stage: StageSpan) -> StageSpan | None:
    """The open ``cosyvoice.inference`` stage this stage belongs to, if any."""
    found = stage.parent.find(s.INFERENCE) if stage.parent is not None else None
    return found if found is not None and not found.ended else None


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
            inference = _request(stage)
            if inference is not None:
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
        with audio_figures.open_wav(value) as (wav, frames):  # frames really there
            rate, channels = wav.getframerate(), wav.getnchannels()
        return {s.PROMPT_SECONDS: round(frames / rate, 4) if rate else 0.0,
                s.PROMPT_SAMPLE_RATE: rate, s.PROMPT_CHANNELS: channels}
    return {}


class Audio(Extractor):
    """The prompt audio: duration, rate, channels, and its quality figures (audio_figures.py),
    measured once per prompt and request (its three stages share them) and copied onto the
    request's span."""

    name = "audio"

    def start(self, stage: StageSpan, call: Call) -> None:
        value = call.first()
        try:
            attrs = describe_audio(value)
        except (wave.Error, OSError, EOFError, ValueError):
            attrs = {}  # not a WAV we can read: the span still times the stage
        attrs.update(_quality(stage, value))
        stage.span.set_attributes(attrs)
        seconds, limit = attrs.get(s.PROMPT_SECONDS), stage.options.max_prompt_seconds
        if limit and seconds is not None and seconds > limit:
            values = {s.PROMPT_SECONDS: seconds, "limit.seconds": limit}
            stage.mark_error("invalid_input_duration", "input limit exceeded", values)
            inference = _request(stage)
            if inference is not None:
                inference.mark_error("invalid_input_duration")


def _quality(stage: StageSpan, value: Any) -> dict[str, Any]:
    """The prompt's figures, measured at its first stage of the request and kept on the
    request (else the stage above), so its stages (three per sentence) measure once."""
    request = _request(stage)
    holder = request or (stage.parent if stage.parent is not None else stage)
    cached = holder.counters.get("audio_figures")
    if cached is not None and cached[0] is value:
        return cached[1]
    try:
        limit = stage.options.max_prompt_seconds  # what the stage reads: never more
        measured = audio_figures.measure(value, min(limit or audio_figures.MAX_SECONDS,
                                                    audio_figures.MAX_SECONDS))
    except (wave.Error, OSError, EOFError, ValueError, TypeError):
        measured = {}
    holder.counters["audio_figures"] = (value, measured)
    if request is not None and measured:
        request.span.set_attributes(measured)  # report --by audio.snr_db, --errors
    return measured


class ModelTTS(Extractor):
    name = "model_tts"

    def start(self, stage: StageSpan, call: Call) -> None:
        stage.span.set_attribute(s.STREAM, bool(call.arg("stream", False)))
        stage.counters.update(chunks=0, token2wav=0)

    def item(self, stage: StageSpan, item: Any) -> None:
        stage.counters["chunks"] += 1

    def close(self, stage: StageSpan, reason: str) -> None:
        stage.span.set_attribute(s.CHUNK_COUNT, stage.counters.get("chunks", 0))


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
        offset = call.arg("token_offset")
        if isinstance(offset, int):  # v2/v3 streaming: tokens of the utterance before this hop
            stage.span.set_attribute(s.TOKEN_OFFSET, offset)

    def end(self, stage: StageSpan, result: Any) -> None:
        """What this hop DELIVERED: the samples token2wav returned (flow and, in v3, the
        vocoder re-process the utterance so far; their figures say what they PROCESSED)."""
        samples = _shape_last(result)
        request = _request(stage)
        rate = request.counters.get("rate") if request is not None else None
        if samples is not None and rate:
            stage.span.set_attribute(s.HOP_AUDIO_SECONDS, round(samples / rate, 4))


class Acoustic(Extractor):
    name = "acoustic"

    def start(self, stage: StageSpan, call: Call) -> None:
        request = _request(stage)
        if request is not None and "input_tokens" in request.counters:
            read = (_shape_last(call.arg("text")) or 0) + (_shape_last(call.arg("prompt_text")) or 0)
            request.counters["input_tokens"] += read
        # upstream's load_vllm gives the LLM a vLLM engine: tokens then come from its steps
        backend = "vllm" if getattr(call.instance, "vllm", None) is not None else "torch"
        stage.span.set_attribute(s.LLM_BACKEND, backend)

    # per token nothing but the wrapper's own count (a long request yields thousands)
    def first_item(self, stage: StageSpan, item: Any) -> None:
        _first_token(stage)

    def close(self, stage: StageSpan, reason: str) -> None:
        tokens = stage.count
        request = _request(stage)
        if request is not None and "output_tokens" in request.counters:
            request.counters["output_tokens"] += tokens
        elapsed = time.monotonic() - stage.started
        stage.span.set_attribute(s.SPEECH_TOKENS, tokens)
        stage.span.set_attribute(s.TOKENS_PER_SECOND, round(tokens / elapsed, 2) if elapsed else 0.0)


def _first_token(stage: StageSpan) -> None:
    """``model.tts`` entry -> the LLM thread's first speech token, on model.tts and (for the
    first sentence) on the request."""
    now = time.monotonic()
    tts = stage.parent.find(s.MODEL_TTS) if stage.parent is not None else None
    if tts is None:
        return
    request = _request(stage)
    for owner in (tts, request):
        if owner is not None and not owner.ended and "first_token" not in owner.counters:
            owner.counters["first_token"] = True
            owner.span.set_attribute(s.LLM_FIRST_TOKEN_MS, round((now - tts.started) * 1000, 3))
            if owner is request and "began" in owner.counters:  # the GenAI server metric's
                owner.counters["ttft"] = now - owner.counters["began"] + owner.counters["queued"]


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
    """FunASR-shaped results: ``[{'key': ..., 'text': ...}, ...]``; the audio it heard has its
    quality figures too (the seed's triage: an empty transcript next to the prompt's SNR)."""

    name = "asr"

    def start(self, stage: StageSpan, call: Call) -> None:
        value = call.arg("input", call.first())
        try:
            stage.span.set_attributes(audio_figures.measure(value))
        except (wave.Error, OSError, EOFError, ValueError, TypeError):
            pass  # not audio we can read: the span still times the stage

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
