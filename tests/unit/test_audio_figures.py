"""The prompt audio in six numbers: a quiet, a clipped and a noisy prompt come out in the
expected order; the figures ride on the prompt-audio spans and the request's span."""

from __future__ import annotations

import io
import math
import random
import types
import wave

import numpy as np
import pytest

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import audio_figures as af

RATE = 16000


def speech_like(seconds: float = 2.0, level: float = 0.3, noise: float = 0.0,
                clip: float = 1.0) -> np.ndarray:
    """Bursts of a tone (words) with pauses between them, some noise, optionally clipped."""
    rng = random.Random(7)
    t = np.arange(int(RATE * seconds)) / RATE
    bursts = ((t * 3).astype(int) % 2 == 0).astype(np.float32)  # 1/3 s on, 1/3 s off
    x = level * np.sin(2 * math.pi * 220 * t) * bursts
    x = x + noise * np.array([rng.gauss(0, 1) for _ in range(t.size)], dtype=np.float32)
    return np.clip(x, -clip, clip).astype(np.float32)


def wav_file(x: np.ndarray, width: int = 2, channels: int = 1) -> io.BytesIO:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(RATE)
        scaled = np.repeat(x, channels)
        if width == 2:
            w.writeframes((np.clip(scaled, -1, 0.99997) * 32768).astype("<i2").tobytes())
        else:
            w.writeframes(((np.clip(scaled, -1, 0.99) * 128) + 128).astype(np.uint8).tobytes())
    out.seek(0)
    return out


def test_quiet_clipped_and_noisy_prompts_come_out_in_order() -> None:
    clean = af.measure(wav_file(speech_like()))
    quiet = af.measure(wav_file(speech_like(level=0.01)))
    clipped = af.measure(wav_file(speech_like(level=3.0, clip=1.0)))
    noisy = af.measure(wav_file(speech_like(noise=0.1)))
    for figures in (clean, quiet, clipped, noisy):
        assert set(figures) == {s.AUDIO_FORMAT, s.AUDIO_RMS_DBFS, s.AUDIO_PEAK_DBFS,
                                s.AUDIO_CLIPPING, s.AUDIO_SILENCE, s.AUDIO_SNR_DB}
        assert figures[s.AUDIO_FORMAT] == "wav/pcm16"
    assert quiet[s.AUDIO_RMS_DBFS] < clean[s.AUDIO_RMS_DBFS] - 20  # 30x quieter: ~ -30 dB
    assert quiet[s.AUDIO_PEAK_DBFS] < clean[s.AUDIO_PEAK_DBFS]
    assert clipped[s.AUDIO_CLIPPING] > 0.1 and clean[s.AUDIO_CLIPPING] == 0.0
    assert noisy[s.AUDIO_SNR_DB] < clean[s.AUDIO_SNR_DB] - 20  # the pauses are noise now
    assert clean[s.AUDIO_SILENCE] == pytest.approx(0.5, abs=0.05)  # half the frames pause
    assert noisy[s.AUDIO_SILENCE] < 0.05
    assert clean[s.AUDIO_SNR_DB] > 60  # digital silence between the words


def test_the_figures_are_exact_on_a_known_signal() -> None:
    full = np.ones(RATE, dtype=np.float32) * 0.5  # a constant half-scale: -6.02 dBFS
    got = af.figures(full, RATE, "test")
    assert got[s.AUDIO_RMS_DBFS] == pytest.approx(-6.02, abs=0.01)
    assert got[s.AUDIO_PEAK_DBFS] == pytest.approx(-6.02, abs=0.01)
    assert (got[s.AUDIO_CLIPPING], got[s.AUDIO_SILENCE], got[s.AUDIO_SNR_DB]) == (0.0, 0.0, 0.0)
    assert af.figures(np.zeros(0), RATE, "empty") == {s.AUDIO_FORMAT: "empty"}


def test_other_wav_forms_and_a_file_left_where_it_was(tmp_path) -> None:
    stereo = af.measure(wav_file(speech_like(), channels=2))
    mono = af.measure(wav_file(speech_like()))
    assert stereo[s.AUDIO_RMS_DBFS] == pytest.approx(mono[s.AUDIO_RMS_DBFS], abs=0.01)
    assert af.measure(wav_file(speech_like(), width=1))[s.AUDIO_FORMAT] == "wav/pcm8"
    upload = wav_file(speech_like())
    af.measure(upload)
    assert upload.tell() == 0  # the frontend reads it next: left where it was
    path = tmp_path / "p.wav"
    path.write_bytes(wav_file(speech_like()).getvalue())
    assert af.measure(str(path)) == mono == af.measure(path)


def test_tensors_are_measured_on_the_cpu_and_skipped_on_a_gpu() -> None:
    import torch

    x = torch.from_numpy(speech_like())[None, :]
    got = af.measure(x)
    assert got[s.AUDIO_FORMAT] == "tensor/float32"
    from_wav = af.measure(wav_file(speech_like()))
    assert got[s.AUDIO_RMS_DBFS] == pytest.approx(from_wav[s.AUDIO_RMS_DBFS], abs=0.01)
    on_gpu = types.SimpleNamespace(shape=(1, 100), is_cuda=True)
    assert af.measure(on_gpu) == {}  # reading it would wait for the GPU on the app's thread
    assert af.measure(42) == {}


def test_a_file_that_is_not_a_wav_gives_no_figures_and_no_error(make_stage_rig) -> None:
    from cosyvoice_otel.instrumentation import extractors as ex
    from cosyvoice_otel.instrumentation.stage_span import Call

    stage = make_stage_rig("audio_preprocess.speech_tokenizer")
    ex.Audio().start(stage, Call(None, (io.BytesIO(b"ID3 an mp3"),), {}, {}))
    assert not any(key.startswith("audio.") for key in stage.span.attributes)


def test_the_three_prompt_stages_measure_once_and_the_request_gets_the_figures(
        make_stage_rig, monkeypatch) -> None:
    from cosyvoice_otel.instrumentation import extractors as ex
    from cosyvoice_otel.instrumentation.stage_span import Call

    calls = []
    real = af.measure
    monkeypatch.setattr(af, "measure", lambda value, *bound: calls.append(value) or real(value, *bound))
    request = make_stage_rig(s.INFERENCE)
    ex.Inference().start(request, Call(None, (), {"tts_text": "x"}, {}))
    frontend = make_stage_rig("tts_frontend.zero_shot", parent=request)
    prompt = wav_file(speech_like())
    for name in ("audio_preprocess.speech_tokenizer", "audio_preprocess.speaker_embedding",
                 "audio_preprocess.speech_feat"):
        stage = make_stage_rig(name, parent=frontend)
        ex.Audio().start(stage, Call(None, (prompt,), {}, {}))
        assert stage.span.attributes[s.AUDIO_SNR_DB] > 60
    assert len(calls) == 1
    assert request.span.attributes[s.AUDIO_SNR_DB] > 60
    assert request.span.attributes[s.AUDIO_FORMAT] == "wav/pcm16"


@pytest.fixture
def make_stage_rig(memory):
    from opentelemetry import context

    from cosyvoice_otel.instrumentation.stage_span import StageSpan

    from ..support.tracing import stage_options

    def make(name: str, parent=None):
        ctx = parent.ctx if parent is not None else context.Context()
        return StageSpan(memory.tracer, name, ctx, None, {}, stage_options())

    return make


@pytest.mark.parametrize("values", [[3.0], [1.0, 5.0], [0.0, 1.0, 2.0, 10.0], list(range(11)),
                                    [-60.0, -59.0, -20.0, -19.5, -3.0]])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_the_quantile_is_numpys_linear_one(values, q) -> None:
    ordered = np.array(sorted(values))
    assert af._quantile(ordered, q) == pytest.approx(float(np.quantile(ordered, q)), abs=1e-9)


def test_frames_of_twenty_milliseconds_and_a_tail_left_out() -> None:
    """Level per 20 ms frame: 1 s at 1 kHz is 50 frames; a 10-frame loud part followed by
    silence gives a silence share of exactly 40/50, and samples past the last whole frame
    are not framed (but count in the level)."""
    rate = 1000
    samples = np.zeros(rate + 7, dtype=np.float64)  # a float64 input is measured as float32
    samples[:200] = 0.5
    samples[rate:] = 0.9  # the 7-sample tail: not a frame
    got = af.figures(samples.tolist(), rate, "t")
    assert got[s.AUDIO_SILENCE] == 0.8
    assert got[s.AUDIO_PEAK_DBFS] == pytest.approx(20 * math.log10(0.9), abs=0.01)
    level = (200 * 0.25 + 7 * 0.81) / (rate + 7)
    assert got[s.AUDIO_RMS_DBFS] == pytest.approx(10 * math.log10(level), abs=0.01)
    assert got[s.AUDIO_SNR_DB] == pytest.approx(
        10 * math.log10(0.25) - 10 * math.log10(1e-12), abs=0.01)
    one = af.figures(np.array([[0.5]]), rate, "t")  # shorter than a frame: one frame of it
    assert one[s.AUDIO_SILENCE] == 0.0 and one[s.AUDIO_SNR_DB] == 0.0


@pytest.mark.parametrize("how", ["input", "first"])
def test_the_asr_span_measures_the_audio_it_heard(make_stage_rig, how) -> None:
    """FunASR's generate(input=...) or its first argument: the prompt's figures on the ASR
    span, next to the transcript's length (the seed's triage of an empty transcript)."""
    from cosyvoice_otel.instrumentation import extractors as ex
    from cosyvoice_otel.instrumentation.stage_span import Call

    stage = make_stage_rig("asr")
    prompt = wav_file(speech_like())
    call = Call(None, (), {"input": prompt}, {}) if how == "input" else Call(
        None, (prompt,), {}, {})
    ex.Asr().start(stage, call)
    assert stage.span.attributes[s.AUDIO_FORMAT] == "wav/pcm16"
    assert stage.span.attributes[s.AUDIO_SNR_DB] > 60
    ex.Asr().end(stage, [{"key": "k"}])  # a result without text: empty
    assert stage.span.attributes[s.ASR_TEXT_LENGTH] == 0
    assert stage.span.attributes[s.ERROR_TYPE] == "asr_empty_result"


def raw_wav(frames: bytes, width: int, channels: int) -> io.BytesIO:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(RATE)
        w.writeframes(frames)
    out.seek(0)
    return out


# one second of -0.5 (a constant half-scale: -6.02 dBFS) in each PCM width the wave module
# writes, and in 1, 2 and 3 channels whose mean is that value
HALF = {1: bytes([64]), 2: (-16384).to_bytes(2, "little", signed=True),
        4: (-(2**30)).to_bytes(4, "little", signed=True)}


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_each_pcm_width_and_channel_count_reads_to_the_same_figures(width, channels) -> None:
    silent = {1: bytes([128]), 2: bytes(2), 4: bytes(4)}[width]
    frame = HALF[width] * channels  # every channel at -0.5
    got = af.measure(raw_wav(frame * RATE, width, channels))
    assert got[s.AUDIO_FORMAT] == f"wav/pcm{8 * width}"
    assert got[s.AUDIO_RMS_DBFS] == pytest.approx(-6.02, abs=0.01)
    assert got[s.AUDIO_PEAK_DBFS] == pytest.approx(-6.02, abs=0.01)
    if channels > 1:  # the channels are mixed down (mean), not read one after another
        mixed = af.measure(raw_wav((HALF[width] + silent * (channels - 1)) * RATE, width,
                                   channels))
        assert mixed[s.AUDIO_PEAK_DBFS] == pytest.approx(20 * math.log10(0.5 / channels),
                                                         abs=0.01)


def test_a_pcm_width_we_do_not_read_gives_no_figures() -> None:
    assert af.measure(raw_wav(bytes(3) * RATE, 3, 1)) == {}


def test_clipping_counts_full_scale_samples_on_both_sides_to_five_places() -> None:
    x = np.full(3000, 0.5, dtype=np.float32)
    x[7] = -1.0  # one sample at negative full scale: it sets the peak too
    got = af.figures(x, RATE, "t")
    assert got[s.AUDIO_CLIPPING] == 0.00033  # 1 / 3000, to five places
    assert got[s.AUDIO_PEAK_DBFS] == 0.0
    x[8] = 1.0
    assert af.figures(x, RATE, "t")[s.AUDIO_CLIPPING] == 0.00067
    x[9] = 0.9995  # past the clipping threshold (0.999), short of full scale: clipped too
    assert af.figures(x, RATE, "t")[s.AUDIO_CLIPPING] == 0.001


def test_a_numpy_array_is_measured_as_a_16_khz_prompt() -> None:
    """Not a torch tensor (no is_cuda, no detach): measured as it is."""
    x = np.full((1, 16000), 0.5, dtype=np.float32)
    got = af.measure(x)
    assert got[s.AUDIO_FORMAT] == "tensor/float32"
    assert got[s.AUDIO_RMS_DBFS] == pytest.approx(-6.02, abs=0.01)
    assert got[s.AUDIO_PEAK_DBFS] == pytest.approx(-6.02, abs=0.01)


def test_a_tensor_is_measured_as_its_mono_samples_whatever_its_shape() -> None:
    """Upstream's (1, n), a (channels, n) prompt (their mean), a (1, 1, n) one, a tensor
    that requires grad, a float64 array: the figures of the same mono samples."""
    import torch

    left = speech_like()
    right = (np.roll(left, 800) * 0.3).astype(np.float32)  # another channel, not a copy
    mono = af.measure(left)
    both = af.measure(((left + right) / 2).astype(np.float32))
    assert mono != both  # the cases below can tell a channel from the mean
    assert af.measure(torch.from_numpy(left)[None, :]) == mono
    assert af.measure(torch.from_numpy(left).reshape(1, 1, -1)) == mono
    assert af.measure(torch.from_numpy(left)[None, :].requires_grad_(True)) == mono
    assert af.measure(torch.from_numpy(np.stack([left, right]))) == both
    wide = af.measure(left.astype(np.float64))
    assert wide == {**mono, s.AUDIO_FORMAT: "tensor/float64"}
