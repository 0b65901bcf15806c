"""The WAVs an app writes: their name and sample digest on the current span, through the
instrumentor's writer rows; hostile files never hang or fail the app (output_files.py), and
triage's reading of a complaint's file."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import wave

import numpy as np
import pytest
from opentelemetry import trace

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor, output_files
from cosyvoice_otel.tools import triage

from ..support.helpers import write_pcm16
from ..support.tracing import Memory


def pcm_wav(path, frames: bytes = b"\x01\x00\x02\x00" * 100, rate: int = 24000) -> bytes:
    return write_pcm16(path, frames, rate)


def test_the_digest_is_of_the_sample_data_whatever_the_header(tmp_path) -> None:
    frames = pcm_wav(tmp_path / "a.wav")
    assert output_files.wav_digest(str(tmp_path / "a.wav")) == hashlib.sha256(
        frames).hexdigest()[:16]
    # the same samples behind a longer header (a LIST chunk, odd-sized and padded)
    data = (tmp_path / "a.wav").read_bytes()
    extra = b"LIST" + struct.pack("<I", 3) + b"abc\0"
    longer = data[:12] + extra + data[12:]
    longer = longer[:4] + struct.pack("<I", len(longer) - 8) + longer[8:]
    (tmp_path / "b.wav").write_bytes(longer)
    assert output_files.wav_digest(str(tmp_path / "b.wav")) == output_files.wav_digest(
        str(tmp_path / "a.wav"))


def _fifo(path):
    os.mkfifo(path)


def _not_riff(path):
    path.write_bytes(b"ID3" + bytes(100))


def _truncated(path):
    pcm_wav(path)
    path.write_bytes(path.read_bytes()[:20])


def _endless_chunks(path):
    path.write_bytes(b"RIFF\0\0\0\0WAVE" + (b"junk" + struct.pack("<I", 0)) * 100)


def _huge_claim(path):
    path.write_bytes(b"RIFF\0\0\0\0WAVE" + b"data" + struct.pack("<I", 0xFFFFFFF0) + b"\0" * 8)


def _directory(path):
    path.mkdir()


@pytest.mark.parametrize("make", [_fifo, _not_riff, _truncated, _endless_chunks, _huge_claim,
                                  _directory])
def test_a_hostile_file_has_no_digest_and_never_hangs(tmp_path, make, monkeypatch) -> None:
    monkeypatch.setattr(output_files, "MAX_BYTES", 1 << 20)
    path = tmp_path / "x.wav"
    make(path)
    done = []
    worker = threading.Thread(target=lambda: done.append(output_files.wav_digest(str(path))))
    worker.start()
    worker.join(10)
    assert done == [None]  # answered (a FIFO never waited on), and no digest


def test_a_streamed_wav_with_an_unknown_size_is_read_to_its_end(tmp_path) -> None:
    samples = b"\x05\x00" * 50
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack(
        "<I", 0xFFFFFFFF) + samples
    (tmp_path / "piped.wav").write_bytes(b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + body)
    assert output_files.wav_digest(str(tmp_path / "piped.wav")) == hashlib.sha256(
        samples).hexdigest()[:16]


def test_a_file_object_is_left_where_it_was(tmp_path) -> None:
    frames = pcm_wav(tmp_path / "a.wav")
    stream = io.BytesIO((tmp_path / "a.wav").read_bytes())
    stream.seek(9)
    assert output_files.wav_data(stream) == frames and stream.tell() == 9
    assert output_files.wav_data(object()) is None


@pytest.fixture
def instrumented():
    memory = Memory()
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=memory.provider)
    yield memory
    inst.uninstrument()


def test_a_wav_written_inside_a_request_names_it_on_the_current_span(instrumented,
                                                                     tmp_path) -> None:
    tracer = instrumented.tracer
    path = tmp_path / "output_20261208_101500.wav"
    with tracer.start_as_current_span("request"):
        frames = pcm_wav(path)  # the standard library's wave: Wave_write.close is a row
    from scipy.io import wavfile

    floats = tmp_path / "float.wav"
    samples = np.linspace(-0.5, 0.5, 64, dtype=np.float32)
    with tracer.start_as_current_span("request2"):
        wavfile.write(floats, 24000, samples)  # scipy's writer row
    pcm_wav(tmp_path / "outside.wav")  # no span of ours current: nothing recorded, no error
    spans = {span.name: dict(span.attributes) for span in instrumented.spans()}
    assert spans["request"] == {s.OUTPUT_FILE: path.name, s.OUTPUT_FILE_DIGEST:
                                hashlib.sha256(frames).hexdigest()[:16]}
    assert spans["request2"] == {s.OUTPUT_FILE: "float.wav", s.OUTPUT_FILE_DIGEST:
                                 hashlib.sha256(samples.tobytes()).hexdigest()[:16]}


def test_a_writer_that_fails_fails_as_it_would_and_a_broken_read_never_reaches_the_app(
        instrumented, tmp_path, monkeypatch) -> None:
    from scipy.io import wavfile

    with trace.get_tracer("t", tracer_provider=instrumented.provider).start_as_current_span(
            "request"), pytest.raises(FileNotFoundError):
        wavfile.write(tmp_path / "missing" / "x.wav", 24000, np.zeros(4, dtype=np.float32))

    def broken(value, max_bytes=0):
        raise RuntimeError("tracing bug")

    monkeypatch.setattr(output_files, "wav_data", broken)
    with instrumented.tracer.start_as_current_span("request3"):
        pcm_wav(tmp_path / "ok.wav")  # the app's write succeeds; the tracing error is counted
    assert (tmp_path / "ok.wav").stat().st_size > 44
    assert s.OUTPUT_FILE not in dict(instrumented.named("request3")[0].attributes)


def test_uninstrument_restores_the_writers(tmp_path) -> None:
    memory = Memory()
    before = wave.Wave_write.close
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=memory.provider)
    assert wave.Wave_write.__dict__["close"] is not before
    inst.uninstrument()
    assert wave.Wave_write.__dict__["close"] is before


def test_triage_reads_a_complaints_file_without_waiting_on_a_fifo(tmp_path) -> None:
    frames = pcm_wav(tmp_path / "a.wav", rate=24000)
    digest, seconds = triage.wav_facts(str(tmp_path / "a.wav"))
    assert digest == hashlib.sha256(frames).hexdigest()[:16]
    assert seconds == pytest.approx(len(frames) / 2 / 24000)
    os.mkfifo(tmp_path / "fifo.wav")
    assert triage.wav_facts(str(tmp_path / "fifo.wav")) == (None, None)
    text = triage.audio_text("x.mp3", [], None)
    assert "not a WAV" in text and "time" in text and text.count("\n") == 1
