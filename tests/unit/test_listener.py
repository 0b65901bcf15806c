"""The listener's figures, value by value: the playback model, where a wait went, the first
chunk's parts, the input fingerprint and the output digest (instrumentation/listener.py)."""

from __future__ import annotations

import hashlib
import hmac
import math
import types

import numpy as np
import pytest
import torch

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import listener
from cosyvoice_otel.instrumentation.output_files import wav_digest
from cosyvoice_otel.instrumentation.stage_span import Call


# (buffer s, threshold s, chunks as (arrival s, audio s)) -> gaps, total stall, stalls
@pytest.mark.parametrize(("buffer", "threshold", "chunks", "gaps", "stalls"), [
    # in time: each chunk before the audio before it has played out
    (0.0, 0.1, [(0.0, 1.0), (0.5, 1.0), (1.9, 1.0)], [0, 0, 0], 0),
    # chunk 1 is 0.3 s late; playback resumes at its arrival, so chunk 2 is judged from there
    (0.0, 0.1, [(0.0, 1.0), (1.3, 1.0), (2.2, 1.0)], [0, 0.3, 0], 1),
    # the same lateness carried: chunk 2 arrives 0.2 s after the resumed audio ran out
    (0.0, 0.1, [(0.0, 1.0), (1.3, 1.0), (2.5, 1.0)], [0, 0.3, 0.2], 2),
    # a gap under the threshold is summed, but it is no stall
    (0.0, 0.1, [(0.0, 0.5), (0.55, 0.5)], [0, 0.05], 0),
    # exactly at the threshold: not over it
    (0.0, 0.1, [(0.0, 0.5), (0.6, 0.5)], [0, 0.1], 0),
    # a start buffer of 0.4 s absorbs the same lateness
    (0.4, 0.1, [(0.0, 1.0), (1.3, 1.0), (2.2, 1.0)], [0, 0, 0], 0),
    # one chunk: nothing to wait for
    (0.0, 0.1, [(5.0, 2.0)], [0], 0),
])
def test_playback_counts_the_gaps_a_listener_hears(buffer, threshold, chunks, gaps,
                                                   stalls) -> None:
    play = listener.Playback(buffer, threshold)
    heard = [play.arrive(at, seconds) for at, seconds in chunks]
    assert heard == pytest.approx(gaps, abs=1e-9)
    assert play.stall == pytest.approx(sum(gaps), abs=1e-9)
    assert play.stalls == stalls
    attrs = play.attributes()
    assert attrs[s.PLAYBACK_CONTINUOUS] is (stalls == 0)
    assert attrs[s.PLAYBACK_STALLS] == stalls
    assert attrs[s.PLAYBACK_STALL_MS] == pytest.approx(1000 * sum(gaps), abs=1e-3)
    assert (attrs[s.PLAYBACK_BUFFER_MS], attrs[s.PLAYBACK_THRESHOLD_MS]) == (
        pytest.approx(buffer * 1000), pytest.approx(threshold * 1000))
    assert s.PLAYBACK_LATE_PART not in attrs  # only when a late part was found


def stage(part, started, finished=None):
    return types.SimpleNamespace(part=part, started=started, finished=finished)


@pytest.mark.parametrize(("stages", "window", "expected"), [
    ([], (0, 10), {"other": 10}),
    # the innermost (latest started) stage owns each moment
    ([stage("llm", 0, 10), stage("flow", 2, 5), stage("vocoder", 5, 6)], (0, 10),
     {"llm": 6, "flow": 3, "vocoder": 1}),
    # the LLM's thread span starts after model.tts: still llm; flow inside it wins
    ([stage("llm", 1, None), stage("llm", 2, None), stage("flow", 4, 6)], (0, 8),
     {"other": 1, "llm": 5, "flow": 2}),
    # a stage without a part is transparent; stages outside the window do not count
    ([stage(None, 0, 10), stage("text", -5, -1), stage("text", 1, 3)], (0, 4),
     {"other": 2, "text": 2}),
    # clipped to the window
    ([stage("vocoder", -2, 3)], (0, 5), {"vocoder": 3, "other": 2}),
])
def test_partition_gives_each_moment_to_the_innermost_stage(stages, window, expected) -> None:
    got = listener.partition(stages, *window)
    assert {k: v for k, v in got.items() if v} == pytest.approx(expected)
    assert sum(got.values()) == pytest.approx(window[1] - window[0])


def test_first_chunk_parts_add_up_exactly_and_take_the_queue_from_the_request() -> None:
    request = types.SimpleNamespace(attributes={s.QUEUE_WAIT_MS: 250.0}, _cosyvoice_mono=int(9e9))
    owner = types.SimpleNamespace(
        request_span=request, span=object(), started=10.0,
        timeline=[stage("text", 10.0, 10.0001234), stage("llm", 10.1, None),
                  stage("flow", 10.3, 10.3333333), stage("vocoder", 10.3333333, 10.4)])
    began, queued = listener.request_start(owner)
    assert (began, queued) == (9.0, 0.25)  # the request's own start, and its queue wait
    attrs = listener.first_chunk(owner, 10.5, began, queued)
    total = attrs[s.FIRST_CHUNK_REQUEST_MS]
    assert total == pytest.approx(1750.0)  # 1.5 s since the request's start + 0.25 s queued
    parts = {p: attrs[s.FIRST_CHUNK_PARTS[p]] for p in s.PARTS}
    assert parts["queue"] == 250.0 and parts["prompt_audio"] == 0.0
    assert parts["llm"] == pytest.approx(300.0 - 100.0 + 100.0, abs=0.01)  # 10.1-10.3, 10.4-10.5
    assert math.isclose(sum(parts.values()), total, abs_tol=1e-6)  # exactly, not within 1 ms
    assert attrs[s.GENAI_TIME_TO_FIRST_CHUNK] == pytest.approx(total / 1000)


def test_a_request_without_a_top_span_of_its_own_starts_with_the_inference() -> None:
    owner = types.SimpleNamespace(request_span=None, span=object(), started=3.0, timeline=[])
    assert listener.request_start(owner) == (3.0, 0.0)
    same = types.SimpleNamespace(span=owner.span)
    owner.request_span = same.span
    assert listener.request_start(owner) == (3.0, 0.0)


def call(**kwargs) -> Call:
    return Call(None, (), kwargs, {})


SECRET = b"a deployment secret of 32 bytes!"


@pytest.mark.parametrize(("a", "b", "equal"), [
    (dict(tts_text="Hello  world"), dict(tts_text="Hello world"), True),  # whitespace
    (dict(tts_text="ＡＢＣ"), dict(tts_text="ABC"), True),  # NFKC: full-width letters
    (dict(tts_text="Hello"), dict(tts_text="hello"), False),
    (dict(tts_text="a", prompt_text="bc"), dict(tts_text="ab", prompt_text="c"), False),
    (dict(tts_text="x", spk_id="中文女"), dict(tts_text="x", spk_id="中文男"), False),
    (dict(tts_text="x", speed=1.0), dict(tts_text="x", speed=1.1), False),
    (dict(tts_text="x", stream=False), dict(tts_text="x", stream=True), False),
    (dict(tts_text="x", prompt_speech_16k=torch.zeros(1, 160)),
     dict(tts_text="x", prompt_speech_16k=torch.zeros(1, 160)), True),
    (dict(tts_text="x", prompt_speech_16k=torch.zeros(1, 160)),
     dict(tts_text="x", prompt_speech_16k=torch.ones(1, 160) * 1e-3), False),
])
def test_the_fingerprint_is_equal_exactly_for_the_same_input(a, b, equal) -> None:
    one = listener.fingerprint(SECRET, call(**a), "sft")
    two = listener.fingerprint(SECRET, call(**b), "sft")
    assert len(one) == 16 and (one == two) is equal


def test_the_fingerprint_is_keyed_and_names_its_mode() -> None:
    text = call(tts_text="yes")
    plain = hashlib.sha256(b"yes").hexdigest()[:16]
    keyed = listener.fingerprint(SECRET, text, "sft")
    assert keyed != plain and keyed != listener.fingerprint(b"another secret, just as long", text,
                                                            "sft")
    assert keyed != listener.fingerprint(SECRET, text, "instruct")
    # the construction, written out: length-prefixed fields under HMAC-SHA256
    mac = hmac.new(SECRET, digestmod=hashlib.sha256)
    for name, value in (("mode", b"sft"), ("tts_text", b"yes"), ("speed", b"1.0"),
                        ("stream", b"0")):
        mac.update(f"{name}:{len(value)}:".encode() + value)
    assert keyed == mac.hexdigest()[:16]


def test_no_fingerprint_for_a_text_generator_or_audio_on_a_gpu() -> None:
    assert listener.fingerprint(SECRET, call(tts_text=(t for t in "ab")), "sft") is None
    gpu = types.SimpleNamespace(shape=(1, 10), is_cuda=True)
    assert listener.fingerprint(SECRET, call(tts_text="x", prompt_speech_16k=gpu), "sft") is None


def test_the_fingerprint_reads_a_prompt_file_object_and_leaves_it_where_it_was(tmp_path) -> None:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x01\x00" * 1600)
    upload = io.BytesIO(out.getvalue())
    upload.seek(7)
    first = listener.fingerprint(SECRET, call(tts_text="x", prompt_wav=upload), "zero_shot")
    assert upload.tell() == 7
    path = tmp_path / "p.wav"
    path.write_bytes(out.getvalue())
    assert first == listener.fingerprint(SECRET, call(tts_text="x", prompt_wav=str(path)),
                                         "zero_shot")
    # not a WAV: no identity for it, rather than a wrong one
    assert listener.fingerprint(SECRET, call(tts_text="x", prompt_wav=io.BytesIO(b"junk")),
                                "zero_shot") is None


def test_the_output_digest_is_the_digest_of_a_float_wav_of_the_same_samples(tmp_path) -> None:
    from scipy.io import wavfile

    chunks = [torch.rand(1, 480) - 0.5, torch.rand(1, 960) - 0.5, torch.rand(1, 7) - 0.5]
    digest = listener.OutputDigest()
    for chunk in chunks:
        digest.add(chunk)
    attrs = digest.attributes()
    assert attrs[s.OUTPUT_SAMPLES] == 1447
    path = tmp_path / "out.wav"
    wavfile.write(path, 24000, torch.cat(chunks, dim=1).numpy().reshape(-1).astype(np.float32))
    assert wav_digest(str(path)) == attrs[s.OUTPUT_DIGEST]
    other = listener.OutputDigest()
    other.add(chunks[0])
    assert other.attributes()[s.OUTPUT_DIGEST] != attrs[s.OUTPUT_DIGEST]


def test_a_forks_numpy_chunks_have_the_same_digest_as_tensors() -> None:
    chunk = torch.rand(1, 100) - 0.5
    as_tensor, as_numpy = listener.OutputDigest(), listener.OutputDigest()
    as_tensor.add(chunk)
    as_numpy.add(chunk.numpy().astype(np.float64))  # a fork's float64 samples: the same audio
    assert as_tensor.attributes() == as_numpy.attributes() != {}


def test_no_output_digest_for_audio_it_cannot_read() -> None:
    digest = listener.OutputDigest()
    digest.add(torch.zeros(1, 10))
    digest.add(types.SimpleNamespace(is_cuda=True))  # one chunk on a GPU: no digest at all
    assert digest.attributes() == {}
    text = listener.OutputDigest()
    text.add("not samples")
    assert text.attributes() == {}
    assert listener.OutputDigest().attributes() == {}  # no audio


@pytest.mark.parametrize(("text", "language"), [
    ("Hello", "en"), ("你好", "zh"), ("Hello 世界", "zh"), ("", None), (None, None),
    (12, None), ("ＡＢＣ", "en")])
def test_the_input_language_is_upstreams_normaliser_choice(text, language) -> None:
    assert listener.language(text) == language
