"""What the listener hears: playback stalls, the first chunk's critical path, input and output keys.

Figures of the ``cosyvoice.inference`` span, computed from what the wrappers already see (chunk
times, each chunk's audio seconds, the stage spans' start and end) and never from content:

* **Playback** (streamed requests): a listener starts playing at the first chunk (after a start
  buffer, ``--playback-buffer-ms``) and resumes as soon as audio is there again. A chunk that
  arrives after the audio before it has played out leaves a gap:
  ``gap = max(0, arrival - play_end)``, then ``play_end = max(play_end, arrival) + seconds``.
  A gap over ``--stall-threshold-ms`` is a stall. The chunk times are the engine's (when the
  app's generator yields): what the app sends at once, before any network.
* **Where a wait went** (``partition``): between two instants, each moment belongs to the
  innermost stage open then (the one that started last), and that stage's part
  (``schema.EXTRACTOR_PARTS``: text, prompt_audio, llm, flow, vocoder); a moment no stage of a
  part covers is ``other``. Because the LLM's thread span and ``model.tts`` are both ``llm``, a
  consumer waiting for speech tokens is ``llm``; flow and the vocoder nest inside and win.
  For the first chunk the window starts at the request's start (its top span's start, less the
  Gradio queue wait, which is the ``queue`` part); for a stall, at the chunk before.
* **Input fingerprint**: HMAC-SHA256 (the deployment's secret, ``secret_key.py``) of the
  normalised texts, mode, speaker, prompt-audio samples, speed and stream; 16 hex.
* **Output digest**: SHA-256 of the synthesised samples as float32 (16 hex), fed chunk by chunk.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cosyvoice_otel import schema as s

if TYPE_CHECKING:
    from cosyvoice_otel.instrumentation.stage_span import StageSpan

OTHER = "other"


class Playback:
    """One request's playback, chunk by chunk (seconds on the monotonic clock)."""

    __slots__ = ("buffer", "threshold", "play_end", "stall", "stalls", "longest",
                 "longest_part")

    def __init__(self, buffer_s: float, threshold_s: float) -> None:
        self.buffer, self.threshold = buffer_s, threshold_s
        self.play_end: float | None = None  # when the audio received so far has played out
        self.stall = 0.0
        self.stalls = 0
        self.longest = 0.0
        self.longest_part: str | None = None

    def arrive(self, now: float, seconds: float) -> float:
        """A chunk of ``seconds`` of audio arrived at ``now``: the gap the listener heard
        before it (0 when it came in time)."""
        if self.play_end is None:  # the first chunk: playing starts after the start buffer
            self.play_end = now + self.buffer + seconds
            return 0.0
        gap = now - self.play_end if now > self.play_end else 0.0
        self.play_end = (now if gap else self.play_end) + seconds
        if gap:
            self.stall += gap
            self.longest = max(self.longest, gap)
            if gap > self.threshold:
                self.stalls += 1
        return gap

    def blame(self, gap: float, part: str) -> None:
        """The stall of ``gap`` went mostly to ``part``: it names the request's stall when it
        is the longest so far."""
        if gap >= self.longest:
            self.longest_part = part

    def attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            s.PLAYBACK_STALL_MS: round(self.stall * 1000, 3),
            s.PLAYBACK_STALLS: self.stalls,
            s.PLAYBACK_LONGEST_MS: round(self.longest * 1000, 3),
            s.PLAYBACK_CONTINUOUS: self.stalls == 0,
            s.PLAYBACK_BUFFER_MS: round(self.buffer * 1000, 3),
            s.PLAYBACK_THRESHOLD_MS: round(self.threshold * 1000, 3)}
        if self.longest_part is not None:
            out[s.PLAYBACK_LATE_PART] = self.longest_part
        return out


def partition(stages: Iterable[StageSpan], start: float, end: float) -> dict[str, float]:
    """Seconds of [start, end] by part: each moment is the innermost (latest started) stage's
    that covers it; the rest is ``other``. A stage still open counts as open until ``end``."""
    spans = []
    for stage in stages:
        if stage.part is None:
            continue
        finish = stage.finished if stage.finished is not None else end
        lo, hi = max(stage.started, start), min(finish, end)
        if hi > lo:
            spans.append((stage.started, lo, hi, stage.part))
    out: dict[str, float] = {}
    if not spans:
        return {OTHER: max(0.0, end - start)}
    edges = sorted({start, end, *(lo for _, lo, _, _ in spans), *(hi for *_, hi, _ in spans)})
    for lo, hi in zip(edges, edges[1:], strict=False):
        owner = OTHER
        began = None
        for started, a, b, part in spans:
            if a <= lo and hi <= b and (began is None or started > began):
                owner, began = part, started
        out[owner] = out.get(owner, 0.0) + (hi - lo)
    return out


def mono_start(span: Any, fallback: float) -> float:
    """A span's start on this process's monotonic clock (seconds): the span clock's own stamp
    (``sdk/lifecycle.py``), else its wall start placed on the monotonic clock, else
    ``fallback``."""
    mono = getattr(span, "_cosyvoice_mono", None)
    if isinstance(mono, int):
        return mono / 1e9
    began = getattr(span, "_start_time", None)
    if isinstance(began, int):
        return time.monotonic() - (time.time_ns() - began) / 1e9
    return fallback


def request_start(stage: StageSpan) -> tuple[float, float]:
    """(when the request's top span started, on the monotonic clock; how long it had waited in
    Gradio's queue before that, in seconds)."""
    request = stage.request_span
    if request is None or request is stage.span:
        return stage.started, 0.0
    attributes = getattr(request, "attributes", None) or {}
    wait = attributes.get(s.QUEUE_WAIT_MS)
    queued = float(wait) / 1000.0 if isinstance(wait, (int, float)) and wait > 0 else 0.0
    return min(mono_start(request, stage.started), stage.started), queued


def first_chunk(stage: StageSpan, now: float, began: float, queued: float) -> dict[str, Any]:
    """The first chunk's critical path: the request's start (``began``, after ``queued``
    seconds in a queue) to ``now``, by part; the parts are rounded to the microsecond and
    ``other`` takes the rest, so they add up to the total exactly."""
    parts = partition(stage.timeline or (), began, now)
    parts["queue"] = queued
    total_ms = round((now - began + queued) * 1000, 3)
    out = {s.FIRST_CHUNK_REQUEST_MS: total_ms,
           s.GENAI_TIME_TO_FIRST_CHUNK: round(total_ms / 1000, 6)}
    known = 0.0
    for part in s.PARTS[:-1]:
        ms = round(parts.get(part, 0.0) * 1000, 3)
        out[s.FIRST_CHUNK_PARTS[part]] = ms
        known += ms
    out[s.FIRST_CHUNK_PARTS[OTHER]] = round(total_ms - known, 3)
    return out


def forget_before(timeline: list[StageSpan], since: float) -> None:
    """Drop the stages that ended before ``since``: no later wait can be theirs."""
    timeline[:] = [t for t in timeline if t.finished is None or t.finished > since]


def late_part(stage: StageSpan, since: float, now: float) -> str:
    """Where the time between the chunk before (``since``) and this late one went: the part
    with the most of it. Stages that ended before ``since`` are dropped from the timeline."""
    timeline = stage.timeline
    if timeline is None:
        return OTHER
    forget_before(timeline, since)
    parts = partition(timeline, since, now)
    return max(parts.items(), key=lambda item: item[1])[0]


# ------------------------------------------------------------------------ input and output keys

_TEXTS = ("tts_text", "prompt_text", "instruct_text")
_SPEAKERS = ("spk_id", "zero_shot_spk_id")
_AUDIO = ("prompt_speech_16k", "prompt_wav", "source_speech_16k", "source_wav")
MAX_AUDIO_BYTES = 30 * 48000 * 4  # what the fingerprint reads of a prompt: 30 s at 48 kHz


def normalise(text: str) -> str:
    """Unicode NFKC, whitespace collapsed: the same words typed twice are the same input."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def fingerprint(secret: bytes, call: Any, mode: Any) -> str | None:
    """The keyed fingerprint of a call's input (None when an audio argument cannot be read
    without waiting for a GPU, or a text is a generator: no stable identity)."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)

    def field(name: str, value: bytes | memoryview) -> None:
        # length-prefixed: ("ab", "c") and ("a", "bc") never collide
        mac.update(f"{name}:{len(value)}:".encode())
        mac.update(value)

    field("mode", str(mode).encode())
    for name in _TEXTS:
        value = call.arg(name)
        if isinstance(value, str):
            field(name, normalise(value).encode())
        elif value is not None and not hasattr(value, "shape"):
            return None  # a text generator (streaming input): not one input
    for name in _SPEAKERS:
        value = call.arg(name)
        if isinstance(value, str) and value:
            field(name, value.encode())
    for name in _AUDIO:
        value = call.arg(name)
        if value is None:
            continue
        data = audio_bytes(value)
        if data is None:
            return None
        field(name, data)
    field("speed", repr(float(call.arg("speed", 1.0))).encode())
    field("stream", b"1" if call.arg("stream", False) else b"0")
    return mac.hexdigest()[:16]


def audio_bytes(value: Any) -> bytes | memoryview | None:
    """The samples of a prompt: a CPU tensor's bytes (a view, no copy, when it is contiguous),
    a WAV's sample data (a path or a file object, left where it was); None for what cannot be
    read here (a GPU tensor)."""
    if hasattr(value, "shape"):
        if getattr(value, "is_cuda", False):
            return None
        import numpy as np

        array = np.ascontiguousarray(value.detach().numpy() if hasattr(value, "detach")
                                     else value)
        return array.data.cast("B")[:MAX_AUDIO_BYTES]
    from cosyvoice_otel.instrumentation.output_files import wav_data

    data = wav_data(value, MAX_AUDIO_BYTES)
    return data if data is not None else None


class OutputDigest:
    """SHA-256 of the synthesised samples as little-endian float32, chunk by chunk."""

    __slots__ = ("hash", "samples", "broken")

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.samples = 0
        self.broken = False  # a chunk could not be read (a GPU tensor): no digest

    def add(self, speech: Any) -> None:
        if self.broken or speech is None:
            return
        if getattr(speech, "is_cuda", False) or not (hasattr(speech, "numpy")
                                                     or hasattr(speech, "astype")):
            self.broken = True  # on a GPU, or not samples at all: no digest for the request
            return
        array = speech.detach().numpy() if hasattr(speech, "detach") else speech  # or numpy
        data = array.astype("<f4", copy=False).tobytes()
        self.hash.update(data)
        self.samples += len(data) // 4

    def attributes(self) -> dict[str, Any]:
        if self.broken or not self.samples:
            return {}
        return {s.OUTPUT_DIGEST: self.hash.hexdigest()[:16], s.OUTPUT_SAMPLES: self.samples}


def language(text: Any) -> str | None:
    """``zh`` when the text holds a CJK ideograph, else ``en``: the split upstream's frontend
    makes to pick its normaliser (``contains_chinese``); None for no text."""
    if not isinstance(text, str) or not text:
        return None
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"
