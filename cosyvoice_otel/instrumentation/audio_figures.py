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
numpy cannot be imported for. Cost: see BENCHMARKS.md (audio_figures.py).
"""

from __future__ import annotations

import os
import wave
from typing import Any

from cosyvoice_otel import schema as s

FRAME_S = 0.02
SILENCE_DBFS = -45.0
CLIP = 0.999
FLOOR_DB = -120.0  # what silence measures (log of 0)


def _db(value: Any, np: Any) -> Any:
    return 20.0 * np.log10(np.maximum(value, 1e-6))


def figures(samples: Any, rate: int, fmt: str) -> dict[str, Any]:
    """The six figures of mono float samples in [-1, 1] (a numpy array)."""
    import numpy as np

    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return {s.AUDIO_FORMAT: fmt}
    magnitude = np.abs(x)
    frame = max(1, int(rate * FRAME_S))
    usable = (x.size // frame) * frame or x.size
    frames = x[:usable].reshape(-1, min(frame, usable))
    frame_db = _db(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)), np)
    low, high = np.percentile(frame_db, [10, 90])
    return {
        s.AUDIO_FORMAT: fmt,
        s.AUDIO_RMS_DBFS: round(float(_db(np.sqrt(np.mean(x.astype(np.float64) ** 2)), np)), 2),
        s.AUDIO_PEAK_DBFS: round(float(_db(magnitude.max(), np)), 2),
        s.AUDIO_CLIPPING: round(float(np.mean(magnitude >= CLIP)), 5),
        s.AUDIO_SILENCE: round(float(np.mean(frame_db < SILENCE_DBFS)), 4),
        s.AUDIO_SNR_DB: round(float(high - low), 2),
    }


def _wav(value: Any) -> tuple[Any, int, str] | None:
    import numpy as np

    position = value.tell() if hasattr(value, "tell") else None
    try:
        with wave.open(os.fspath(value) if isinstance(value, os.PathLike) else value, "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    finally:
        if position is not None:
            value.seek(position)
    if width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        return None
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x, rate, f"wav/pcm{8 * width}"


def measure(value: Any) -> dict[str, Any]:
    """The figures of a prompt given as a path, a file object or a CPU tensor ({} when it is
    none of these, or on a GPU)."""
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
        if mono.ndim > 1:
            mono = mono.reshape(-1, mono.shape[-1]).mean(axis=0)
        return figures(mono, 16000, f"tensor/{dtype}")  # upstream's prompt tensors: 16 kHz
    if isinstance(value, (str, os.PathLike)) or hasattr(value, "read"):
        read = _wav(value)
        return figures(*read) if read is not None else {}
    return {}
