"""From an output file to its trace: the WAVs an app writes, named and digested on its request.

The seed's app writes ``outputs/output_YYYYMMDD_HHMMSS.wav``; a complaint names or attaches such a
file. When the app writes a WAV with one of the usual writers (rows of the instrumentor's patch
table: ``torchaudio.save``, ``soundfile.write``, ``scipy.io.wavfile.write``, the standard
library's ``wave``) while a span of ours is current (the request's top span: the HTTP server
span or ``gradio.event``), that span gets the file's base name (``tts.output.file``; masked
like any value when it holds the request's own text) and the SHA-256 of the sample data as
written (``tts.output.file_digest``): ``cosyvoice-traced triage --audio FILE.wav`` reads the
same digest from the file and asks Zipkin for it. A lossless copy keeps the digest; a re-encoded
file (mp3, resampled, normalised) does not: then time and duration find it (README).

The file is read back once, at most ``MAX_BYTES``, after the writer returned; a file that is not
a RIFF/WAVE (another format, a FIFO, a device) is skipped. Never raises into the app.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from cosyvoice_otel import schema as s
from cosyvoice_otel.errors import note_error

MAX_BYTES = 256 * 1024 * 1024  # an hour of 48 kHz float stereo is 1.4 GB: never read that


def wav_data(value: Any, max_bytes: int = MAX_BYTES) -> bytes | None:
    """The sample data (the ``data`` chunk) of a RIFF/WAVE path or file object (left where it
    was), at most ``max_bytes``; None when it is not a WAV we can read (any sample format: the
    digest is of the bytes, so PCM and float files both work)."""
    if isinstance(value, (str, os.PathLike)):
        try:
            fd = os.open(value, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a FIFO or a device: never waited on
            with os.fdopen(os.dup(fd), "rb") as stream:
                return _data_chunk(stream, max_bytes)
        finally:
            os.close(fd)
    if hasattr(value, "read") and hasattr(value, "seek"):
        try:
            position = value.tell()
        except (OSError, ValueError):
            return None
        try:
            value.seek(0)
            return _data_chunk(value, max_bytes)
        except (OSError, ValueError):
            return None
        finally:
            value.seek(position)
    return None


def _data_chunk(stream: Any, max_bytes: int) -> bytes | None:
    header = stream.read(12)
    if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64") or header[8:12] != b"WAVE":
        return None
    for _ in range(64):  # a WAV has a handful of chunks; a crafted file does not loop us
        chunk = stream.read(8)
        if len(chunk) < 8:
            return None
        name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if name == b"data":
            # a writer that streamed the file may leave the size 0 or 0xFFFFFFFF: read to the end
            want = max_bytes if size in (0, 0xFFFFFFFF) else min(size, max_bytes)
            if size not in (0, 0xFFFFFFFF) and size > max_bytes:
                return None  # too large to digest whole: no digest rather than a wrong one
            return stream.read(want)
        stream.seek(size + (size & 1), os.SEEK_CUR)  # chunks are word-aligned
    return None


def wav_digest(value: Any) -> str | None:
    """16 hex of the SHA-256 of a WAV's sample data, or None."""
    data = wav_data(value)
    return hashlib.sha256(data).hexdigest()[:16] if data else None


def _record(path: Any) -> None:
    span = trace.get_current_span()
    if not span.is_recording() or not isinstance(path, (str, os.PathLike)):
        return
    digest = wav_digest(path)
    if digest is None:
        return
    span.set_attribute(s.OUTPUT_FILE, os.path.basename(os.fspath(path)))
    span.set_attribute(s.OUTPUT_FILE_DIGEST, digest)


def writer(path_arg: str, position: int) -> Callable[..., Callable[..., Any]]:
    """A row's factory for a function ``write(path, ...)``: the path is argument ``path_arg``
    (or at ``position``)."""

    def make(tracer: trace.Tracer, enabled: Callable[[], bool]) -> Callable[..., Any]:
        def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            result = wrapped(*args, **kwargs)
            if enabled():
                try:
                    _record(kwargs.get(path_arg, args[position] if len(args) > position
                                       else None))
                except Exception as exc:  # noqa: BLE001 - the file is written: never fail it
                    note_error("output file", exc)
            return result

        return wrapper

    return make


def wave_close(tracer: trace.Tracer, enabled: Callable[[], bool]) -> Callable[..., Any]:
    """``wave.Wave_write.close``: the file is complete once it returns (its name: the file
    object ``wave.open`` opened)."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        name = getattr(getattr(instance, "_file", None), "name", None)
        result = wrapped(*args, **kwargs)
        if enabled() and isinstance(name, str):
            try:
                _record(name)
            except Exception as exc:  # noqa: BLE001
                note_error("output file", exc)
        return result

    return wrapper
