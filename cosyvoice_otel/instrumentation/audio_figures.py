"""What a prompt audio sounds like, in six numbers (never the samples themselves).

The seed's triage: "pick the samples whose ASR transcript came back empty and check whether a
low signal-to-noise ratio caused it". The prompt-audio stages carry these figures, computed
from samples already in memory (a CPU tensor the app passed) or read once per request from the
WAV the frontend is about to read (a path, or an upload's file object, left where it was):

* ``audio.format``: ``wav/pcm16`` (container / sample format), ``tensor/float32``, ...;
* ``audio.rms_dbfs``, ``audio.peak_dbfs``: level and peak, in dB below full scale;
* ``audio.clipping_ratio``: share of samples at full scale (|x| >= 0.999);
* ``audio.silence_ratio``: share of 20 ms frames quieter than -45 dBFS;
* ``audio.snr_db``: an ESTIMATE: the loudest decile of 20 ms frames (speech) over the quietest
  decile (the noise floor between words), in dB. Low for noisy audio, and for audio without
  pauses; 0 when every frame is equally loud.

A tensor on a GPU is skipped (reading it would synchronise the app's thread), and so is audio
numpy cannot be imported for. At most the prompt's first 30 s are read (upstream's own bound;
the input limit when it is set), and NaN or inf samples are left out of the figures.
Cost: see BENCHMARKS.md (audio_figures.py).
"""

from __future__ import annotations

import math
import os
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cosyvoice_otel import schema as s

MAX_SECONDS = 30.0  # upstream refuses prompts over 30 s (its speech tokenizer): never read more
FRAME_S = 0.02
SILENCE_DBFS = -45.0
CLIP = 0.999


def _quantile(ordered: Any, q: float) -> float:
    """numpy's default (linear) quantile of an already sorted array: a sort of the ~50 frames
    per second instead of ``np.percentile``'s general machinery (ten times its cost here)."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def figures(samples: Any, rate: int, fmt: str) -> dict[str, Any]:
    """The six figures of mono float samples in [-1, 1] (a numpy array).

    One pass of float32 squares serves the level, the clipping share and the frames' power;
    sums in float64 (a 30 s prompt's half-million squares)."""
    import numpy as np

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    finite = np.isfinite(x)
    if not finite.all():  # NaN or inf samples (a broken tensor): the figures of the rest
        x = x[finite]
    if x.size == 0:
        return {s.AUDIO_FORMAT: fmt}
    squares = x * x
    frame = max(1, min(int(rate * FRAME_S), x.size))
    usable = (x.size // frame) * frame
    power = squares[:usable].reshape(-1, frame).mean(axis=1, dtype=np.float64)
    total = float(squares.sum(dtype=np.float64)) / x.size
    frame_db = np.sort(10.0 * np.log10(np.maximum(power, 1e-12)))
    peak = max(float(x.max()), -float(x.min()))
    # no sample reaches full scale in most prompts: then no pass to count them
    clipped = int(np.count_nonzero(squares >= CLIP * CLIP)) if peak >= CLIP else 0
    return {
        s.AUDIO_FORMAT: fmt,
        s.AUDIO_RMS_DBFS: round(10.0 * math.log10(max(total, 1e-12)), 2),
        s.AUDIO_PEAK_DBFS: round(20.0 * math.log10(max(peak, 1e-6)), 2),
        s.AUDIO_CLIPPING: round(clipped / x.size, 5),
        s.AUDIO_SILENCE: round(int(np.count_nonzero(frame_db < SILENCE_DBFS)) / len(frame_db),
                               4),
        s.AUDIO_SNR_DB: round(_quantile(frame_db, 0.9) - _quantile(frame_db, 0.1), 2),
    }


@contextmanager
def open_wav(value: Any) -> Iterator[tuple[wave.Wave_read, int]]:
    """A WAV path or file object, opened: (the reader, the frames really there). The header's
    frame count is not trusted alone: a WAV written to a pipe (``ffmpeg ... -f wav -``) says
    0xFFFFFFFF bytes, or 0; the frames are what the file holds after the header, when it can
    tell. A file object is left where it was."""
    own = isinstance(value, (str, os.PathLike))
    stream = open(value, "rb") if own else value  # noqa: SIM115 - closed below
    position = None if own or not hasattr(value, "tell") else value.tell()
    try:
        with wave.open(stream, "rb") as wav:
            frames = wav.getnframes()
            available = _frames_after_header(stream, wav)
            if available is not None and (frames == 0 or frames > available):
                frames = available
            yield wav, frames
    finally:
        if own:
            stream.close()
        elif position is not None:
            value.seek(position)


def _frames_after_header(stream: Any, wav: wave.Wave_read) -> int | None:
    """Whole frames between the data chunk's start and the end of the file (None when the
    stream cannot seek: a pipe)."""
    try:
        start = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(start)
    except (OSError, AttributeError, ValueError):
        return None
    size = wav.getsampwidth() * wav.getnchannels()
    return max(0, end - start) // size if size else None


def _wav(value: Any, max_seconds: float) -> tuple[Any, int, str] | None:
    """The first ``max_seconds`` of a WAV as mono float samples: never more is read (a 200 MB
    prompt costs what its first seconds do)."""
    import numpy as np

    with open_wav(value) as (wav, frames):
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        raw = wav.readframes(min(frames, int(rate * max_seconds)))
    if width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        return None
    if channels > 1:
        x = x[: x.size - x.size % channels].reshape(-1, channels).mean(axis=1)
    return x, rate, f"wav/pcm{8 * width}"


def measure(value: Any, max_seconds: float = MAX_SECONDS) -> dict[str, Any]:
    """The figures of a prompt given as a path, a file object or a CPU tensor ({} when it is
    none of these, or on a GPU), from its first ``max_seconds`` at most."""
    try:
        import numpy  # noqa: F401 - the figures need it; no numpy, no figures
    except ImportError:
        return {}
    shape = getattr(value, "shape", None)
    if shape is not None:
        if getattr(value, "is_cuda", False):
            return {}  # .cpu() would wait for the GPU on the app's thread
        dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
        array = value.detach().numpy() if hasattr(value, "detach") else value
        import numpy as np

        mono = np.asarray(array, dtype=np.float32)
        if mono.ndim > 1:  # (1, n): upstream's shape, a view; (channels, n): their mean
            mono = mono.reshape(-1, mono.shape[-1])
            mono = mono[0] if mono.shape[0] == 1 else mono.mean(axis=0)
        mono = mono.reshape(-1)[: int(16000 * max_seconds)]
        return figures(mono, 16000, f"tensor/{dtype}")  # upstream's prompt tensors: 16 kHz
    if isinstance(value, (str, os.PathLike)) or hasattr(value, "read"):
        read = _wav(value, max_seconds)
        return figures(*read) if read is not None else {}
    return {}
