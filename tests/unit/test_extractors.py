"""Each extractor on its own, with exact attribute values: a real SDK span, stand-in tensors
(anything with a ``shape``) and real WAV files. The demo engine runs them for real in
test_instrumentor.py; this pins the arithmetic down."""

from __future__ import annotations

import io
import types
import wave

import pytest
from opentelemetry import context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cosyvoice_otel import masking
from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import extractors as ex
from cosyvoice_otel.instrumentation.stage_span import Call, StageSpan


class T:
    """A stand-in tensor: only its shape is read."""

    def __init__(self, *shape: int) -> None:
        self.shape = shape


@pytest.fixture
def make_stage():
    memory = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(memory))
    tracer = tracer.get_tracer("cosyvoice_otel")

    def _make(name: str = "stage", parent: StageSpan | None = None, instance=None,
              max_prompt_seconds: float = 0.0, max_text_chars: int = 0) -> StageSpan:
        options = types.SimpleNamespace(cuda_sync=False, gpu_timing=None, metrics=None, hash_salt=None,
                                        max_prompt_seconds=max_prompt_seconds,
                                        max_text_chars=max_text_chars, fingerprint_secret=None,
                                        playback_buffer_s=0.0, stall_threshold_s=0.1)
        ctx = parent.ctx if parent is not None else context.Context()
        return StageSpan(tracer, name, ctx, instance, {}, options)

    _make.memory = memory
    return _make


def attrs(stage: StageSpan) -> dict:
    return dict(stage.span.attributes)


def wav_bytes(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * channels * int(seconds * rate))
    return out.getvalue()


@pytest.mark.parametrize(("value", "expected"), [
    (T(24000), {s.PROMPT_SECONDS: 1.5, s.PROMPT_SAMPLE_RATE: 16000, s.PROMPT_CHANNELS: 1}),
    (T(2, 8000), {s.PROMPT_SECONDS: 0.5, s.PROMPT_SAMPLE_RATE: 16000, s.PROMPT_CHANNELS: 2}),
    (T(1, 12345), {s.PROMPT_SECONDS: 0.7716, s.PROMPT_SAMPLE_RATE: 16000,
                   s.PROMPT_CHANNELS: 1}),
    (42, {}),
])
def test_describe_audio_of_tensors(value, expected) -> None:
    assert ex.describe_audio(value) == expected


def test_describe_audio_of_a_wav_path_and_a_file_left_where_it_was(tmp_path) -> None:
    path = tmp_path / "p.wav"
    path.write_bytes(wav_bytes(1.25, rate=22050, channels=2))
    expected = {s.PROMPT_SECONDS: 1.25, s.PROMPT_SAMPLE_RATE: 22050, s.PROMPT_CHANNELS: 2}
    assert ex.describe_audio(path) == expected
    assert ex.describe_audio(str(path)) == expected
    got = ex.describe_audio(io.BytesIO(wav_bytes(0.1234567)))
    assert got[s.PROMPT_SECONDS] == round(int(0.1234567 * 16000) / 16000, 4)  # 4 decimals
    part = io.BytesIO(b"")
    part.write(wav_bytes(0.5))
    part.seek(0)
    ex.describe_audio(part)
    assert part.tell() == 0  # the app reads the file afterwards: put back where it was
    empty_rate = io.BytesIO(wav_bytes(0.0, rate=8000))
    assert ex.describe_audio(empty_rate)[s.PROMPT_SECONDS] == 0.0


def test_audio_stage_marks_an_over_long_prompt_and_its_inference(make_stage,
                                                                tmp_path) -> None:
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(2.0))
    inference = make_stage(s.INFERENCE)
    frontend = make_stage("tts_frontend.zero_shot", parent=inference)
    stage = make_stage("audio", parent=frontend, max_prompt_seconds=1.5)
    ex.Audio().start(stage, Call(None, (str(path),), {}, {}))
    assert attrs(stage)[s.PROMPT_SECONDS] == 2.0
    assert stage.span.status.status_code is StatusCode.ERROR
    assert stage.span.status.description == "invalid_input_duration"
    (event,) = stage.span.events
    assert event.name == "input limit exceeded"
    assert dict(event.attributes) == {s.PROMPT_SECONDS: 2.0, "limit.seconds": 1.5}
    assert inference.span.status.description == "invalid_input_duration"


@pytest.mark.parametrize(("seconds", "limit", "error"), [
    (1.5, 1.5, False),   # at the limit: fine
    (2.0, 0.0, False),   # no limit
    (2.0, 1.5, True)])
def test_audio_limit_boundaries(make_stage, tmp_path, seconds, limit, error) -> None:
    path = tmp_path / "p.wav"
    path.write_bytes(wav_bytes(seconds))
    stage = make_stage("audio", max_prompt_seconds=limit)
    ex.Audio().start(stage, Call(None, (str(path),), {}, {}))
    assert (stage.span.status.status_code is StatusCode.ERROR) is error


def test_an_ended_inference_is_not_marked_again(make_stage, tmp_path) -> None:
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(2.0))
    inference = make_stage(s.INFERENCE)
    inference.end()
    stage = make_stage("audio", parent=inference, max_prompt_seconds=1.0)
    ex.Audio().start(stage, Call(None, (str(path),), {}, {}))
    assert inference.span.status.status_code is StatusCode.UNSET


def test_an_unreadable_prompt_still_times_the_stage(make_stage) -> None:
    stage = make_stage("audio", max_prompt_seconds=1.0)
    ex.Audio().start(stage, Call(None, (io.BytesIO(b"not a wav"),), {}, {}))
    assert attrs(stage) == {} and stage.span.status.status_code is StatusCode.UNSET


def feed(extractor, stage, items: int) -> None:
    """What the generator wrapper does per yielded item: count; first_item once; item."""
    for _ in range(items):
        stage.count += 1
        if stage.count == 1:
            extractor.first_item(stage, 1)
        extractor.item(stage, 1)


def test_acoustic_counts_tokens_and_their_rate(make_stage, monkeypatch) -> None:
    stage = make_stage("acoustic_model")
    stage.started = 100.0
    monkeypatch.setattr(ex.time, "monotonic", lambda: 104.0)
    extractor = ex.Acoustic()
    extractor.start(stage, Call(None, (), {}, {}))
    feed(extractor, stage, 10)
    extractor.close(stage, "completed")
    assert attrs(stage) == {s.SPEECH_TOKENS: 10, s.TOKENS_PER_SECOND: 2.5,
                            s.LLM_BACKEND: "torch"}
    fast = make_stage("acoustic_model")
    fast.started = 104.0  # no time passed: no division by zero
    extractor.start(fast, Call(None, (), {}, {}))
    feed(extractor, fast, 1)
    extractor.close(fast, "completed")
    assert attrs(fast) == {s.SPEECH_TOKENS: 1, s.TOKENS_PER_SECOND: 0.0, s.LLM_BACKEND: "torch"}
    slow = make_stage("acoustic_model")
    slow.started = 101.0
    extractor.start(slow, Call(None, (), {}, {}))
    feed(extractor, slow, 2)
    extractor.close(slow, "completed")
    assert attrs(slow)[s.TOKENS_PER_SECOND] == 0.67  # two decimals


@pytest.mark.parametrize(("result", "length", "error"), [
    ([{"key": "a", "text": "hello"}, {"text": "hi"}], 7, False),
    ([{"key": "a"}, "junk", {"text": ""}], 0, True),
    ([], 0, True), (None, 0, True), ([{"text": 5}, {"text": "abc"}], 3, False)])
def test_asr_text_length_and_empty_results(make_stage, result, length, error) -> None:
    stage = make_stage("asr_transcribe")
    ex.Asr().end(stage, result)
    assert attrs(stage)[s.ASR_TEXT_LENGTH] == length
    assert (stage.span.status.status_code is StatusCode.ERROR) is error
    if error:
        (event,) = stage.span.events
        expected = len([r for r in result if isinstance(r, dict)]) if isinstance(result,
                                                                                 list) else 0
        assert event.name == "ASR returned empty result"
        assert dict(event.attributes) == {"asr.results": expected}
        assert stage.span.status.description == "asr_empty_result"


def test_text_normalize_sets_length_and_sentences_on_itself_and_its_inference(
        make_stage) -> None:
    inference = make_stage(s.INFERENCE)
    stage = make_stage(s.TEXT_NORMALIZE, parent=inference)
    extractor = ex.TextNormalize()
    extractor.start(stage, Call(None, ("你好，world",), {}, {"text": 0}))
    extractor.end(stage, ["a", "b", "c"])
    assert attrs(stage) == {s.TEXT_LENGTH: 8, s.SENTENCE_COUNT: 3}
    assert attrs(inference)[s.SENTENCE_COUNT] == 3
    alone = make_stage(s.TEXT_NORMALIZE)
    extractor.end(alone, "not split")  # split=False returns a string: nothing to count
    assert s.SENTENCE_COUNT not in attrs(alone)
    inference.end()
    late = make_stage(s.TEXT_NORMALIZE, parent=inference)
    extractor.end(late, ["x"])
    assert attrs(inference)[s.SENTENCE_COUNT] == 3  # an ended inference is left alone


def test_flow_vocoder_and_token2wav_sizes(make_stage) -> None:
    tts = make_stage(s.MODEL_TTS)
    tts.counters.update(chunks=0, token2wav=0)
    first = make_stage(s.TOKEN2WAV, parent=tts)
    ex.Token2Wav().start(first, Call(None, (), {"finalize": True}, {}))
    second = make_stage(s.TOKEN2WAV, parent=tts)
    ex.Token2Wav().start(second, Call(None, (), {}, {}))
    assert attrs(first) == {s.CHUNK_INDEX: 0, s.FINALIZE: True}
    assert attrs(second) == {s.CHUNK_INDEX: 1, s.FINALIZE: False}
    flow = make_stage(s.FLOW)
    ex.Flow().start(flow, Call(None, (), {"token": T(1, 50)}, {}))
    ex.Flow().end(flow, (T(1, 80, 100), None))
    assert attrs(flow) == {s.SPEECH_TOKENS: 50, s.MEL_FRAMES: 100}
    vocoder = make_stage(s.VOCODER, instance=types.SimpleNamespace(sampling_rate=24000))
    ex.Vocoder().start(vocoder, Call(None, (), {"speech_feat": T(1, 80, 100)}, {}))
    ex.Vocoder().end(vocoder, T(1, 12000))
    assert attrs(vocoder) == {s.MEL_FRAMES: 100, s.AUDIO_SECONDS: 0.5}
    unknown = make_stage(s.VOCODER, instance=object())
    ex.Vocoder().end(unknown, T(1, 12000))
    assert attrs(unknown) == {}


# ------------------------------------------------------------- the request's inference span

REQUEST_SHAPE = {s.TEXT_LENGTH, s.STREAM, s.SPEED, s.SAMPLE_RATE}

def test_inference_measures_the_text_and_the_request(make_stage, monkeypatch) -> None:
    from cosyvoice_otel.sdk import redaction

    stage = make_stage(s.INFERENCE, max_text_chars=200)
    stage.started = 50.0
    extractor = ex.Inference()
    call = Call(types.SimpleNamespace(sample_rate=24000), ("Hello, 你好",),
                {"prompt_text": "my prompt", "stream": 1, "speed": 2}, {"tts_text": 0})
    extractor.start(stage, call)
    assert {k: v for k, v in attrs(stage).items() if k in REQUEST_SHAPE} == {
        s.TEXT_LENGTH: 9, s.STREAM: True, s.SPEED: 2.0, s.SAMPLE_RATE: 24000}
    pattern = masking.pattern_for(stage.span.get_span_context().trace_id)
    assert redaction.mask("Hello, 你好 and my prompt", pattern) == \
        f"{redaction.MASK} and {redaction.MASK}"  # registered for masking
    monkeypatch.setattr(ex.time, "monotonic", lambda: 50.25)
    extractor.item(stage, {"tts_speech": T(1, 12000)})
    monkeypatch.setattr(ex.time, "monotonic", lambda: 51.0)
    extractor.item(stage, {"tts_speech": T(1, 36000)})
    extractor.item(stage, "not a chunk")  # counted, no samples
    extractor.end(stage, None)
    extractor.close(stage, "completed")
    got = attrs(stage)
    assert got[s.FIRST_CHUNK_MS] == 250.0  # set once, by the first chunk
    assert got[s.CHUNK_COUNT] == 3 and got[s.AUDIO_SECONDS] == 2.0
    assert got[s.RTF] == 0.5  # 1 s of work for 2 s of audio
    assert stage.span.status.status_code is StatusCode.UNSET


def test_inference_without_a_rate_or_audio_reports_zero_seconds_and_no_rtf(make_stage) -> None:
    stage = make_stage(s.INFERENCE)
    extractor = ex.Inference()
    extractor.start(stage, Call(types.SimpleNamespace(sample_rate="n/a"), (), {"tts_text": "x"},
                                {}))
    assert s.SAMPLE_RATE not in attrs(stage)
    assert attrs(stage)[s.STREAM] is False and attrs(stage)[s.SPEED] == 1.0
    extractor.item(stage, {"tts_speech": T(1, 100)})
    extractor.end(stage, None)
    extractor.close(stage, "completed")
    assert attrs(stage)[s.AUDIO_SECONDS] == 0.0 and s.RTF not in attrs(stage)
    silent = make_stage(s.INFERENCE)
    extractor.start(silent, Call(types.SimpleNamespace(sample_rate=16000), (),
                                 {"tts_text": "y"}, {}))
    extractor.end(silent, None)
    extractor.close(silent, "completed")
    assert attrs(silent)[s.CHUNK_COUNT] == 0 and s.RTF not in attrs(silent)


def test_an_inference_that_fails_still_says_what_it_produced(make_stage) -> None:
    """The schema's required figures are written on EVERY end (close), not only on success."""
    extractor = ex.Inference()
    stage = make_stage(s.INFERENCE)
    extractor.start(stage, Call(types.SimpleNamespace(sample_rate=16000), (),
                                {"tts_text": "y"}, {}))
    extractor.item(stage, {"tts_speech": T(1, 8000)})
    extractor.close(stage, "error")  # no end(): the generator raised
    got = attrs(stage)
    assert got[s.CHUNK_COUNT] == 1 and got[s.AUDIO_SECONDS] == 0.5
    assert got[s.END_REASON] == "error" and s.RTF not in got


@pytest.mark.parametrize(("length", "limit", "error"), [(200, 200, False), (201, 200, True),
                                                        (5000, 0, False)])
def test_inference_text_limit(make_stage, length, limit, error) -> None:
    stage = make_stage(s.INFERENCE, max_text_chars=limit)
    ex.Inference().start(stage, Call(None, ("a" * length,), {}, {"tts_text": 0}))
    assert (stage.span.status.status_code is StatusCode.ERROR) is error
    if error:
        assert stage.span.status.description == "text_too_long"
        (event,) = stage.span.events
        assert event.name == "input limit exceeded"
        assert dict(event.attributes) == {s.TEXT_LENGTH: length, "limit.characters": limit}


def test_inference_hash_is_a_salted_hmac_of_the_text(make_stage) -> None:
    import hashlib
    import hmac

    stage = make_stage(s.INFERENCE)
    stage.options.hash_salt = b"salt"
    ex.Inference().start(stage, Call(None, ("secret text",), {}, {"tts_text": 0}))
    expected = hmac.new(b"salt", b"secret text", hashlib.sha256).hexdigest()[:16]
    assert attrs(stage)[s.TEXT_HASH] == expected


def test_frontend_measures_and_registers_its_texts(make_stage) -> None:
    from cosyvoice_otel.sdk import redaction

    stage = make_stage("tts_frontend.instruct")
    ex.Frontend().start(stage, Call(None, ("sentence one",), {"instruct_text": "be calm"},
                                    {"tts_text": 0}))
    assert attrs(stage) == {s.TEXT_LENGTH: 12}
    pattern = masking.pattern_for(stage.span.get_span_context().trace_id)
    assert redaction.mask("sentence one; be calm", pattern) == \
        f"{redaction.MASK}; {redaction.MASK}"
    blank = make_stage("tts_frontend.vc")
    ex.Frontend().start(blank, Call(None, (T(1, 5),), {}, {"tts_text": 0}))
    assert attrs(blank) == {}


def test_model_tts_counts_chunks_and_the_base_extractor_does_nothing(make_stage) -> None:
    stage = make_stage(s.MODEL_TTS)
    extractor = ex.ModelTTS()
    extractor.start(stage, Call(None, (), {"stream": True}, {}))
    for _ in range(4):
        extractor.item(stage, object())
    extractor.end(stage, None)
    extractor.close(stage, "completed")
    assert attrs(stage) == {s.STREAM: True, s.CHUNK_COUNT: 4}
    assert stage.counters == {"chunks": 4, "token2wav": 0}
    base = make_stage("plain")
    none = ex.EXTRACTORS["none"]
    none.start(base, Call(None, (), {}, {}))
    none.item(base, 1)
    none.end(base, 1)
    assert attrs(base) == {}
    # the registry is the schema's list: a stage file may name exactly what is implemented
    assert tuple(ex.EXTRACTORS) == s.EXTRACTORS
    assert all(name == extractor.name for name, extractor in ex.EXTRACTORS.items())


def test_acoustic_names_the_vllm_backend_when_the_llm_has_an_engine(make_stage) -> None:
    stage = make_stage("acoustic_model")
    ex.Acoustic().start(stage, Call(types.SimpleNamespace(vllm=object()), (), {}, {}))
    assert attrs(stage)[s.LLM_BACKEND] == "vllm"
    idle = make_stage("acoustic_model")  # an attribute set to None is no engine
    ex.Acoustic().start(idle, Call(types.SimpleNamespace(vllm=None), (), {}, {}))
    assert attrs(idle)[s.LLM_BACKEND] == "torch"


def model_listing(*speakers: str) -> types.SimpleNamespace:
    """A loaded model whose frontend lists these speakers (presets and cached ones)."""
    return types.SimpleNamespace(frontend=types.SimpleNamespace(
        spk2info={name: {} for name in speakers}))


@pytest.mark.parametrize(("spk_id", "expected"), [("alice-01", "alice-01"), ("", None),
                                                  (None, None), (7, None), ("mallory", None)])
def test_the_speaker_cache_id_is_named_on_inference_and_frontend_when_the_model_lists_it(
        make_stage, spk_id, expected) -> None:
    for extractor in (ex.Inference(), ex.Frontend()):
        stage = make_stage("x")
        extractor.start(stage, Call(model_listing("alice-01"), (),
                                    {"tts_text": "hi", "zero_shot_spk_id": spk_id}, {}))
        assert attrs(stage).get(s.ZERO_SHOT_SPK_ID) == expected, extractor.name


def test_add_zero_shot_spk_names_the_id_it_caches_under(make_stage) -> None:
    stage = make_stage(s.SPEAKER_ADD)
    ex.SpeakerAdd().start(stage, Call(model_listing(), (), {"zero_shot_spk_id": "bob"}, {}))
    assert attrs(stage)[s.ZERO_SHOT_SPK_ID] == "bob"  # not listed yet: this call adds it


def test_a_speaker_id_the_model_does_not_list_is_custom_and_masked(make_stage) -> None:
    """Upstream's FastAPI server passes any spk_id to the engine; its KeyError quotes it."""
    from cosyvoice_otel.sdk import redaction

    stage = make_stage(s.INFERENCE)
    stage.span.set_attribute(s.MODE, "sft")
    ex.Inference().start(stage, Call(model_listing("中文女"), (),
                                     {"spk_id": "SECRET-client-string"}, {}))
    assert attrs(stage)[s.GENAI_VOICE] == "custom"
    pattern = masking.pattern_for(stage.span.get_span_context().trace_id)
    assert redaction.mask("KeyError: 'SECRET-client-string'", pattern) == \
        f"KeyError: '{redaction.MASK}'"


def test_speaker_add_registers_the_prompt_text_for_redaction(make_stage) -> None:

    stage = make_stage("cosyvoice.add_zero_shot_spk")
    ex.SpeakerAdd().start(stage, Call(None, ("secret prompt words", "p.wav", "spk"),
                                      {}, {"prompt_text": 0, "prompt_wav": 1,
                                           "zero_shot_spk_id": 2}))
    pattern = masking.pattern_for(stage.span.get_span_context().trace_id)
    assert pattern is not None and pattern.search("said secret prompt words")


def test_streamed_text_is_flagged_and_never_measured(make_stage) -> None:
    stage = make_stage("cosyvoice.inference")
    ex.Inference().start(stage, Call(None, ((p for p in ["a"]),), {}, {"tts_text": 0}))
    assert attrs(stage)[s.TEXT_STREAMED] is True
    assert s.TEXT_LENGTH not in attrs(stage)
    plain = make_stage("cosyvoice.inference")
    ex.Inference().start(plain, Call(None, ("abc",), {}, {"tts_text": 0}))
    assert s.TEXT_STREAMED not in attrs(plain) and attrs(plain)[s.TEXT_LENGTH] == 3


def test_text_stream_counts_tokens_and_registers_each_piece_as_it_arrives(make_stage) -> None:
    from opentelemetry import trace


    request = make_stage("request")
    pieces = iter(["first secret piece", "second hidden piece"])
    call = Call(None, (pieces,), {}, {"text_generator": 0})
    token = context.attach(request.ctx)
    try:
        ex.TextStream().rewrite(call)
    finally:
        context.detach(token)
    wrapped = call.args[0]
    assert wrapped is not pieces and isinstance(wrapped, types.GeneratorType)
    trace_id = request.span.get_span_context().trace_id
    assert masking.pattern_for(trace_id) is None  # nothing known before the text arrives
    assert next(wrapped) == "first secret piece"
    assert masking.pattern_for(trace_id).search("first secret piece")
    assert list(wrapped) == ["second hidden piece"]
    assert masking.pattern_for(trace_id).search("second hidden piece")
    stage = make_stage("tts_frontend.text_stream")
    extractor = ex.TextStream()
    extractor.start(stage, call)
    for item in (T(1, 1), T(1, 1), T(1, 3)):
        extractor.item(stage, item)
    extractor.end(stage, None)
    assert attrs(stage) == {s.TEXT_TOKENS: 5}
    outside = Call(None, (iter(["x"]),), {}, {"text_generator": 0})
    assert trace.get_current_span().get_span_context().trace_id == 0
    ex.TextStream().rewrite(outside)  # no trace: nothing to register under, left alone
    assert isinstance(outside.args[0], type(iter([])))


# ---------------------------------------------- attribution: GenAI, concurrency, warm-up, config

def test_chunk_events_carry_audio_seconds_and_rtf_per_chunk(make_stage, monkeypatch) -> None:
    stage = make_stage(s.INFERENCE)
    stage.started = 10.0
    extractor = ex.Inference()
    extractor.start(stage, Call(types.SimpleNamespace(sample_rate=1000), ("hi",), {},
                                {"tts_text": 0}))
    for now, samples in ((10.5, 250), (10.75, 1000), (11.0, 0)):
        monkeypatch.setattr(ex.time, "monotonic", lambda now=now: now)
        extractor.item(stage, {"tts_speech": T(1, samples)})
    events = [(e.name, dict(e.attributes)) for e in stage.span.events]
    assert events == [  # no event for a chunk without audio
        (s.CHUNK_EVENT, {s.CHUNK_INDEX: 0, s.CHUNK_AUDIO_SECONDS: 0.25, s.CHUNK_RTF: 2.0,
                         s.CHUNK_GAP_MS: 0.0}),
        # it arrives just as the first chunk's 0.25 s have played: no gap
        (s.CHUNK_EVENT, {s.CHUNK_INDEX: 1, s.CHUNK_AUDIO_SECONDS: 1.0, s.CHUNK_RTF: 0.25,
                         s.CHUNK_GAP_MS: 0.0})]


def test_inflight_counts_requests_inside_the_engine_and_every_end_leaves(make_stage) -> None:
    extractor = ex.Inference()
    base = ex.ENGINE.inflight
    stages = [make_stage(s.INFERENCE) for _ in range(3)]
    for stage in stages:
        extractor.start(stage, Call(None, (), {}, {}))
    assert [attrs(st)[s.INFLIGHT] for st in stages] == [base + 1, base + 2, base + 3]
    for stage, reason in zip(stages, ("completed", "interrupted", "error"), strict=True):
        extractor.close(stage, reason)
        extractor.close(stage, reason)  # a second close never leaves twice
        assert attrs(stage)[s.END_REASON] == reason
    assert ex.ENGINE.inflight == base


def test_end_reason_comes_from_how_the_stage_ended(make_stage) -> None:
    from cosyvoice_otel.instrumentation.stage_span import StageSpan

    reasons = {}
    for how in ("completed", "error", "interrupted"):
        stage = make_stage(s.INFERENCE)
        stage.on_end = lambda st, reason, how=how: reasons.setdefault(how, reason)
        if how == "error":
            stage.fail(ValueError("x"))
        stage.end(abandoned=how == "interrupted")
        stage.end()  # ending again changes nothing
    assert reasons == {"completed": "completed", "error": "error", "interrupted": "interrupted"}
    assert StageSpan.__slots__  # the hook is a slot: no per-instance dict


def test_warmup_is_true_once_per_mode_and_stream_pair(make_stage, monkeypatch) -> None:
    monkeypatch.setattr(ex, "ENGINE", ex._Engine())
    extractor = ex.Inference()
    seen = []
    for mode, stream in (("sft", False), ("sft", False), ("sft", True), ("zero_shot", False),
                         ("sft", True)):
        stage = make_stage(s.INFERENCE)
        stage.span.set_attribute(s.MODE, mode)
        extractor.start(stage, Call(None, (), {"stream": stream}, {}))
        seen.append(attrs(stage)[s.WARMUP])
        extractor.close(stage, "completed")
    assert seen == [True, False, True, True, False]


@pytest.mark.parametrize(("mode", "kwargs", "voice"), [
    ("sft", {"spk_id": "中文女"}, "中文女"),
    ("instruct", {"spk_id": "中文男"}, "中文男"),
    ("zero_shot", {"zero_shot_spk_id": "alice"}, "alice"),
    ("zero_shot", {"zero_shot_spk_id": ""}, "zero_shot"),
    ("cross_lingual", {}, "cross_lingual"),
    ("instruct2", {"spk_id": "not a preset mode"}, "instruct2"),
    ("vc", {}, "vc"),
    ("sft", {"spk_id": "unlisted"}, "custom"),
    ("zero_shot", {"zero_shot_spk_id": "unlisted"}, "custom"),
])
def test_genai_attributes_name_the_operation_and_the_voice_never_audio(make_stage, mode, kwargs,
                                                                       voice) -> None:
    stage = make_stage(s.INFERENCE)
    stage.span.set_attribute(s.MODE, mode)
    ex.Inference().start(stage, Call(model_listing("中文女", "中文男", "alice"), (), kwargs, {}))
    got = attrs(stage)
    assert (got[s.GENAI_OPERATION], got[s.GENAI_PROVIDER], got[s.GENAI_OUTPUT_TYPE]) == (
        "text_to_speech", "cosyvoice", "speech")
    assert got[s.GENAI_VOICE] == voice


def test_tokens_and_first_token_roll_up_to_the_request(make_stage, monkeypatch) -> None:
    request = make_stage(s.INFERENCE)
    request.started = 0.0
    ex.Inference().start(request, Call(None, (), {}, {}))
    for sentence in range(2):
        tts = make_stage(s.MODEL_TTS, parent=request)
        tts.started = 1.0 + sentence
        llm = make_stage(s.ACOUSTIC_MODEL, parent=tts)
        ex.Acoustic().start(llm, Call(None, (), {"text": T(1, 7), "prompt_text": T(1, 3)}, {}))
        # the first token 250.12345 ms after the first sentence's model.tts began, 750.12345
        # after the second's: each model.tts has its own, the request the first sentence's
        monkeypatch.setattr(ex.time, "monotonic",
                            lambda sentence=sentence: 1.25012345 + sentence * 1.5)
        feed(ex.Acoustic(), llm, 20)
        ex.Acoustic().close(llm, "completed")
        assert attrs(tts)[s.LLM_FIRST_TOKEN_MS] == [250.123, 750.123][sentence]
    stream = make_stage(s.TEXT_STREAM, parent=make_stage(s.ACOUSTIC_MODEL, parent=request))
    ex.TextStream().start(stream, Call(None, (), {}, {}))
    ex.TextStream().item(stream, T(1, 5))
    ex.TextStream().end(stream, None)
    ex.Inference().end(request, None)
    ex.Inference().close(request, "completed")
    got = attrs(request)
    assert got[s.GENAI_INPUT_TOKENS] == 2 * 10 + 5 and got[s.GENAI_OUTPUT_TOKENS] == 40
    assert got[s.LLM_FIRST_TOKEN_MS] == 250.123  # the first sentence's
    # an LLM under a model.tts outside any request: its first token on model.tts alone
    lone = make_stage(s.MODEL_TTS)
    lone.started = 2.5
    llm = make_stage(s.ACOUSTIC_MODEL, parent=lone)
    feed(ex.Acoustic(), llm, 1)
    assert attrs(lone)[s.LLM_FIRST_TOKEN_MS] == 250.123


class Script:  # what torch.jit.load returns is a RecursiveScriptModule: read by type name
    pass


Script.__name__ = "RecursiveScriptModule"


def test_model_facts_are_read_from_the_loaded_model(tmp_path, monkeypatch) -> None:
    import sys

    import torch

    class CosyVoice:
        pass

    class CosyVoice3(CosyVoice):
        pass

    config = tmp_path / "Fun-CosyVoice3-0.5B"
    config.mkdir()
    (config / "cosyvoice3.yaml").write_text("llm: !new:x.Y\n")
    api = CosyVoice3()
    api.model_dir = str(config) + "/"
    api.model = types.SimpleNamespace(
        fp16=True, llm=types.SimpleNamespace(vllm=object()),
        flow=types.SimpleNamespace(encoder=Script(),
                                   decoder=types.SimpleNamespace(estimator_engine=object())))
    facts = ex.model_facts(api)
    import hashlib

    assert facts[s.MODEL_VERSION] == 3 and facts[s.GENAI_MODEL] == "Fun-CosyVoice3-0.5B"
    assert (facts[s.FP16], facts[s.LOAD_VLLM], facts[s.LOAD_JIT], facts[s.LOAD_TRT]) == (
        True, True, True, True)
    assert facts[s.CONFIG_HASH] == hashlib.sha256(b"llm: !new:x.Y\n").hexdigest()[:12]
    assert facts[s.DEVICE] == "cpu" and facts[s.TORCH_VERSION] == torch.__version__
    assert ex.model_facts(api) is facts  # once per model object
    monkeypatch.delitem(sys.modules, "torch")  # never imported by us: no torch, no such facts
    plain = CosyVoice()
    plain.model = types.SimpleNamespace(llm=object(), flow=object())
    facts = ex.model_facts(plain)
    assert facts[s.MODEL_VERSION] == 1
    assert (facts[s.FP16], facts[s.LOAD_VLLM], facts[s.LOAD_JIT], facts[s.LOAD_TRT]) == (
        False, False, False, False)
    assert s.CONFIG_HASH not in facts and s.GENAI_MODEL not in facts
    assert s.DEVICE not in facts and s.TORCH_VERSION not in facts


# ------------------------------------------------- figures at their edges (from mutation runs)

def test_token2wav_says_its_offset_and_the_audio_its_hop_delivered(make_stage) -> None:
    request = make_stage(s.INFERENCE)
    request.counters["rate"] = 24000
    tts = make_stage(s.MODEL_TTS, parent=request)  # no hop counted on it yet
    hop = make_stage(s.TOKEN2WAV, parent=tts)
    ex.Token2Wav().start(hop, Call(None, (), {"token_offset": 25}, {}))
    ex.Token2Wav().end(hop, T(1, 1000))
    assert attrs(hop) == {s.CHUNK_INDEX: 0, s.FINALIZE: False, s.TOKEN_OFFSET: 25,
                          s.HOP_AUDIO_SECONDS: 0.0417}
    assert tts.counters["token2wav"] == 1
    # outside a request (no rate to divide by), an offset that is not a count, no samples
    lone = make_stage(s.TOKEN2WAV)
    ex.Token2Wav().start(lone, Call(None, (), {"token_offset": "25"}, {}))
    ex.Token2Wav().end(lone, T(1, 1000))
    silent = make_stage(s.TOKEN2WAV, parent=tts)
    ex.Token2Wav().start(silent, Call(None, (), {}, {}))
    ex.Token2Wav().end(silent, None)
    assert attrs(lone) == {s.CHUNK_INDEX: 0, s.FINALIZE: False}
    assert attrs(silent) == {s.CHUNK_INDEX: 1, s.FINALIZE: False}


def test_the_engine_counts_from_zero_and_every_leave_takes_one_off() -> None:
    engine = ex._Engine()
    assert engine.enter(("sft", False)) == (1, True)
    assert engine.enter(("sft", False)) == (2, False)
    engine.leave()
    assert engine.inflight == 1
    engine.leave()
    assert engine.inflight == 0


def test_an_inference_closed_without_a_start_says_zero(make_stage) -> None:
    """The start hook failed or never ran (the wrapper contains it): the schema's required
    figures are still there, as zeros."""
    bare = make_stage(s.INFERENCE)
    ex.Inference().close(bare, "error")
    rated = make_stage(s.INFERENCE)
    rated.counters["rate"] = 24000  # a rate, no samples counted
    ex.Inference().close(rated, "error")
    for stage in (bare, rated):
        assert attrs(stage) == {s.END_REASON: "error", s.CHUNK_COUNT: 0, s.AUDIO_SECONDS: 0.0}
    tts = make_stage(s.MODEL_TTS)
    ex.ModelTTS().close(tts, "error")
    assert attrs(tts) == {s.CHUNK_COUNT: 0}


def test_inference_figures_keep_their_decimals(make_stage, monkeypatch) -> None:
    stage = make_stage(s.INFERENCE)
    stage.started = 10.0
    extractor = ex.Inference()
    extractor.start(stage, Call(types.SimpleNamespace(sample_rate=24000), ("hi",), {},
                                {"tts_text": 0}))
    monkeypatch.setattr(ex.time, "monotonic", lambda: 10.2501234)
    extractor.item(stage, {"tts_speech": T(1, 1000)})  # 0.041666 s of audio
    extractor.end(stage, None)
    extractor.close(stage, "completed")
    got = attrs(stage)
    assert got[s.FIRST_CHUNK_MS] == 250.123 and got[s.AUDIO_SECONDS] == 0.0417
    assert got[s.RTF] == 6.003  # under a second of audio has its RTF too
    (event,) = stage.span.events
    assert event.attributes[s.CHUNK_AUDIO_SECONDS] == 0.0417


def test_model_tts_without_a_stream_argument_is_not_streaming(make_stage) -> None:
    stage = make_stage(s.MODEL_TTS)
    ex.ModelTTS().start(stage, Call(None, (), {}, {}))
    assert attrs(stage)[s.STREAM] is False


@pytest.mark.parametrize(("spk_id", "written"), [("voice-1", True), ("", False), (5, False)])
def test_speaker_add_names_only_a_real_id(make_stage, spk_id, written) -> None:
    stage = make_stage(s.SPEAKER_ADD)
    ex.SpeakerAdd().start(stage, Call(None, (), {"zero_shot_spk_id": spk_id}, {}))
    assert attrs(stage).get(s.ZERO_SHOT_SPK_ID) == (spk_id if written else None)


def test_a_text_piece_without_a_shape_is_one_token(make_stage) -> None:
    stage = make_stage(s.TEXT_STREAM)
    ex.TextStream().start(stage, Call(None, (), {}, {}))
    ex.TextStream().item(stage, "word")
    ex.TextStream().end(stage, None)
    assert attrs(stage)[s.TEXT_TOKENS] == 1


def test_text_normalize_flags_streamed_text(make_stage) -> None:
    stage = make_stage(s.TEXT_NORMALIZE)
    ex.TextNormalize().start(stage, Call(None, ((p for p in ["a"]),), {}, {"text": 0}))
    assert attrs(stage) == {s.TEXT_STREAMED: True}


@pytest.mark.parametrize(("text", "prompt", "read"), [(7, None, 7), (None, 3, 3), (7, 3, 10)])
def test_acoustic_adds_what_it_read_to_the_request(make_stage, text, prompt, read) -> None:
    request = make_stage(s.INFERENCE)
    request.counters["input_tokens"] = 0
    llm = make_stage(s.ACOUSTIC_MODEL, parent=request)
    kwargs = {name: T(1, n) for name, n in (("text", text), ("prompt_text", prompt)) if n}
    ex.Acoustic().start(llm, Call(None, (), kwargs, {}))
    assert request.counters["input_tokens"] == read


def test_the_speakers_a_model_lists_come_from_a_dict_only() -> None:
    ns = types.SimpleNamespace
    assert ex._speakers(ns(frontend=ns(spk2info={"a": 1}))) == {"a": 1}
    assert ex._speakers(ns(frontend=ns())) == ()
    assert ex._speakers(ns()) == ()
    assert ex._speakers(ns(spk2info=["a"])) == ()


def test_the_prompt_is_measured_once_per_sentence_outside_a_request(make_stage,
                                                                   monkeypatch) -> None:
    measured = []
    monkeypatch.setattr(ex.audio_figures, "measure",
                        lambda value, *bound: measured.append(value) or {"audio.snr_db": 20.0})
    parent = make_stage(s.MODEL_TTS)
    wav = object()
    first = ex._quality(make_stage("audio_preprocess.a", parent=parent), wav)
    second = ex._quality(make_stage("audio_preprocess.b", parent=parent), wav)
    assert first == second == {"audio.snr_db": 20.0} and measured == [wav]


def test_asr_reads_its_input_by_name_wherever_it_is(make_stage, tmp_path) -> None:
    path = tmp_path / "heard.wav"
    path.write_bytes(wav_bytes(0.5))
    stage = make_stage(s.ASR)
    ex.Asr().start(stage, Call(None, (), {"batch_size": 1, "input": str(path)}, {}))
    # the input by its name, not the first argument (batch_size here): its figures
    assert attrs(stage)["audio.format"] == "wav/pcm16"


def wav_header(rate: int, frames: int) -> bytes:
    """A WAV whose header says ``rate`` (0: a broken writer's), 16-bit mono."""
    import struct

    data = b"\0\0" * frames
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " +
            struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def test_a_wav_header_with_no_rate_is_zero_seconds_not_a_division(tmp_path) -> None:
    assert ex.describe_audio(io.BytesIO(wav_header(0, 10)))[s.PROMPT_SECONDS] == 0.0


def test_model_facts_of_a_v2_model_whose_api_holds_fp16_and_a_jit_llm(monkeypatch) -> None:
    import sys

    class CosyVoice2:
        pass

    api = CosyVoice2()
    api.fp16 = True  # on the API object (older releases), not the model
    api.model = types.SimpleNamespace(llm=types.SimpleNamespace(llm=Script()), flow=object())
    facts = ex.model_facts(api)
    assert facts[s.MODEL_VERSION] == 2 and facts[s.FP16] is True and facts[s.LOAD_JIT] is True
    other = CosyVoice2()
    other.model = types.SimpleNamespace(llm=types.SimpleNamespace(text_encoder=Script()))
    assert ex.model_facts(other)[s.LOAD_JIT] is True

    class ScriptModule:  # torch.jit.script's own type name
        pass

    assert ex._is_script(ScriptModule()) and not ex._is_script(object())
    # a torch without a version string, on a machine whose driver names its GPU
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(
        is_available=lambda: True, get_device_name=lambda index: f"GPU #{index}"))
    monkeypatch.setitem(sys.modules, "torch", fake)
    third = CosyVoice2()
    facts = ex.model_facts(third)
    assert facts[s.TORCH_VERSION] == "?" and facts[s.DEVICE] == "GPU #0"
    fake.cuda.is_available = lambda: False
    assert ex.model_facts(CosyVoice2())[s.DEVICE] == "cpu"


def test_a_text_piece_that_cannot_be_registered_still_reaches_the_model(make_stage,
                                                                        monkeypatch) -> None:
    from collections import Counter

    from cosyvoice_otel import errors

    monkeypatch.setattr(errors, "ERRORS", Counter())

    def refuse(trace_id, values):
        raise MemoryError("registry full")

    request = make_stage("request")
    call = Call(None, (iter(["one", "two"]),), {}, {"text_generator": 0})
    token = context.attach(request.ctx)
    try:
        ex.TextStream().rewrite(call)
    finally:
        context.detach(token)
    monkeypatch.setattr(masking, "remember", refuse)
    assert list(call.args[0]) == ["one", "two"]
    assert errors.ERRORS == {"text_stream.remember": 2}


def test_a_cuda_that_breaks_when_asked_is_no_gpu() -> None:
    def broken():
        raise RuntimeError("CUDA driver initialization failed")

    torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=broken))
    assert ex._cuda_device(torch) is None
    gpu = types.SimpleNamespace(cuda=types.SimpleNamespace(
        is_available=lambda: True, get_device_name=lambda index: "NVIDIA H100"))
    assert ex._cuda_device(gpu) == "NVIDIA H100"


def test_an_odd_speed_costs_the_fingerprint_never_the_requests_figures(make_stage) -> None:
    """A speed that is no number: the request keeps its counters (chunks, audio) and goes on;
    the fingerprint alone is lost, and the failure is counted."""
    from cosyvoice_otel import errors

    secret = b"0123456789abcdef0123456789abcdef"
    extractor = ex.Inference()
    stage = make_stage(s.INFERENCE)
    stage.options.fingerprint_secret = secret
    extractor.start(stage, Call(types.SimpleNamespace(sample_rate=1000), (),
                                {"tts_text": "hi", "speed": 1.0}, {}))
    assert len(attrs(stage)[s.INPUT_FINGERPRINT]) == 16 and attrs(stage)[s.SPEED] == 1.0
    before = errors.ERRORS["input fingerprint"]
    odd = make_stage(s.INFERENCE)
    odd.options.fingerprint_secret = secret
    extractor.start(odd, Call(types.SimpleNamespace(sample_rate=1000), (),
                              {"tts_text": "hi", "speed": "fast"}, {}))
    assert s.INPUT_FINGERPRINT not in attrs(odd) and s.SPEED not in attrs(odd)
    assert odd.counters["chunks"] == 0 and odd.timeline == []  # the rest of the request's set-up
    assert errors.ERRORS["input fingerprint"] == before + 1
    # an argument the fingerprint cannot read (no WAV): no fingerprint, and no error
    unread = make_stage(s.INFERENCE)
    unread.options.fingerprint_secret = secret
    extractor.start(unread, Call(types.SimpleNamespace(sample_rate=1000), (),
                                 {"tts_text": "hi", "prompt_wav": 42}, {}))
    assert s.INPUT_FINGERPRINT not in attrs(unread)
    assert errors.ERRORS["input fingerprint"] == before + 1
