"""The instrumentor with the SDK's in-memory exporter, on the demo engine (no server needed)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import pytest
import torch
import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cosyvoice_otel import errors, masking, schema
from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
from cosyvoice_otel.instrumentation.extractors import EXTRACTORS
from cosyvoice_otel.sdk import lifecycle
from cosyvoice_otel.tools.checks import check_synthesis

from ..support.helpers import BIN, ROOT, reset_tracer_provider, run_parallel

EXAMPLES = ROOT / "examples"

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TEXT = "Hello there, this is the demo engine. 你好，世界！"


@pytest.fixture(scope="module")
def models(make_model):
    """The demo engines, with this module's globals: the tracer provider and the threading
    instrumentation (the LLM thread's context), both undone when the module is done."""
    trace.set_tracer_provider(PROVIDER)
    ThreadingInstrumentor().instrument()
    # what the configurator installs in a traced process: one clock for every span
    clock = lifecycle.install_span_clock()
    from cosyvoice.cli.cosyvoice import AutoModel

    built = {v: AutoModel(model_dir=str(make_model(v))) for v in (1, 2, 3)}
    built["vllm"] = AutoModel(model_dir=str(make_model(3)), load_vllm=True)
    yield built
    ThreadingInstrumentor().uninstrument()
    if clock:
        lifecycle.uninstall_span_clock()
    reset_tracer_provider()


def engine_threads_done(timeout: float = 30.0) -> None:
    """Wait for the demo engine's LLM threads of earlier tests: a stream a test abandoned
    leaves its LLM thread running, and its acoustic_model span, ending late, would land in
    the next test's spans (an orphan whose parent was exported before)."""
    import threading

    for thread in threading.enumerate():
        target = getattr(getattr(thread, "_target", None), "__name__", "")
        if target in ("llm_job", "vc_job"):
            thread.join(timeout)


@pytest.fixture
def instrumented(models):
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER)
    engine_threads_done()
    EXPORTER.clear()
    yield inst
    engine_threads_done()
    inst.uninstrument()
    EXPORTER.clear()


@pytest.fixture
def prompt_wav(prompt_file) -> str:
    return str(prompt_file)


def as_zipkin(spans: tuple[ReadableSpan, ...]) -> list[dict]:
    """SDK spans in the shape Zipkin stores, so one checker serves both."""
    out = []
    for span in spans:
        item = {"traceId": f"{span.context.trace_id:032x}", "id": f"{span.context.span_id:016x}",
                "name": span.name, "timestamp": span.start_time // 1000,
                "duration": (span.end_time - span.start_time) // 1000,
                "tags": {k: str(v).lower() if isinstance(v, bool) else str(v)
                         for k, v in span.attributes.items()}}
        if span.parent is not None:
            item["parentId"] = f"{span.parent.span_id:016x}"
        if span.kind.name != "INTERNAL":
            item["kind"] = span.kind.name
        out.append(item)
    return out


def run_request(model, mode: str, stream: bool, prompt: str) -> list:
    tracer = PROVIDER.get_tracer("test")
    calls = {
        "sft": lambda: model.inference_sft(TEXT, "中文女", stream=stream),
        "zero_shot": lambda: model.inference_zero_shot(TEXT, "prompt words", prompt,
                                                       stream=stream),
        "cross_lingual": lambda: model.inference_cross_lingual(TEXT, prompt, stream=stream),
        "instruct": lambda: model.inference_instruct(TEXT, "中文男", "speak slowly", stream=stream),
        "instruct2": lambda: model.inference_instruct2(TEXT, "speak slowly", prompt,
                                                       stream=stream),
        "vc": lambda: model.inference_vc(prompt, prompt, stream=stream),
    }
    with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER):
        return list(calls[mode]())


# What each version's public API offers (upstream: instruct is v1 only, instruct2 v2/v3 only).
VERSION_MODES = [(1, m) for m in ("sft", "zero_shot", "cross_lingual", "instruct", "vc")] + [
    (v, m) for v in (2, 3) for m in ("sft", "zero_shot", "cross_lingual", "instruct2", "vc")]


def check_hops(spans: list[dict]) -> None:
    """flow and vocoder are children of token2wav, exactly once per hop."""
    hops = [s for s in spans if s["name"] == schema.TOKEN2WAV]
    assert hops
    for hop in hops:
        children = sorted(s["name"] for s in spans if s.get("parentId") == hop["id"])
        assert children == [schema.FLOW, schema.VOCODER], children


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("version", "mode"), VERSION_MODES)
def test_complete_tree_for_every_version_and_mode(models, instrumented, prompt_wav, version,
                                                  mode, stream) -> None:
    model = models[version]
    outputs = run_request(model, mode, stream, prompt_wav)
    spans = as_zipkin(EXPORTER.get_finished_spans())
    assert check_synthesis(spans, mode, stream) == []
    assert len({s["traceId"] for s in spans}) == 1
    check_hops(spans)
    inference = next(s for s in spans if s["name"] == schema.INFERENCE)
    samples = sum(o["tts_speech"].shape[1] for o in outputs)
    assert float(inference["tags"][schema.AUDIO_SECONDS]) == pytest.approx(
        samples / model.sample_rate, abs=1e-3)
    assert int(inference["tags"][schema.CHUNK_COUNT]) == len(outputs)
    vocoded = sum(float(s["tags"][schema.AUDIO_SECONDS]) for s in spans
                  if s["name"] == schema.VOCODER)
    assert vocoded >= samples / model.sample_rate - 1e-3  # every sample went through a vocoder
    if mode != "vc":
        assert int(inference["tags"][schema.TEXT_LENGTH]) == len(TEXT)
        assert int(inference["tags"][schema.SENTENCE_COUNT]) == 2
    if stream:
        indexes = sorted(int(s["tags"][schema.CHUNK_INDEX]) for s in spans
                         if s["name"] == schema.TOKEN2WAV)
        assert len(indexes) == len(outputs)  # one token2wav per streamed chunk
        assert len(outputs) > 1


def test_llm_thread_span_is_a_child_of_model_tts(models, instrumented) -> None:
    run_request(models[3], "sft", False, "")
    spans = {s.context.span_id: s for s in EXPORTER.get_finished_spans()}
    acoustic = [s for s in spans.values() if s.name == schema.ACOUSTIC_MODEL]
    assert acoustic
    for span in acoustic:
        assert spans[span.parent.span_id].name == schema.MODEL_TTS
        assert int(span.attributes[schema.SPEECH_TOKENS]) > 0


def test_no_content_in_attributes(models, instrumented, prompt_wav) -> None:
    run_request(models[3], "zero_shot", True, prompt_wav)
    for span in EXPORTER.get_finished_spans():
        for value in span.attributes.values():
            assert "Hello there" not in str(value) and "prompt words" not in str(value)


def test_generator_span_is_not_current_across_yield_and_ends_once_when_abandoned(
        models, instrumented) -> None:
    tracer = PROVIDER.get_tracer("test")
    long_text = "One sentence here. " * 6
    with tracer.start_as_current_span("consumer") as consumer:
        gen = models[3].inference_sft(long_text, "中文女", stream=True)
        next(gen)
        assert trace.get_current_span() is consumer  # the stage span did not leak out
        gen.close()  # the client went away
    spans = EXPORTER.get_finished_spans()
    inference = [s for s in spans if s.name == schema.INFERENCE]
    assert len(inference) == 1
    assert inference[0].attributes[schema.ABANDONED] is True
    assert all(s.end_time is not None for s in spans)


def test_exhausted_generator_is_not_marked_abandoned(models, instrumented) -> None:
    run_request(models[3], "sft", True, "")
    inference = [s for s in EXPORTER.get_finished_spans() if s.name == schema.INFERENCE]
    assert len(inference) == 1 and schema.ABANDONED not in inference[0].attributes


def test_uninstrument_restores_originals_and_reinstrument_does_not_double_wrap(models) -> None:
    from cosyvoice.cli.cosyvoice import CosyVoice, CosyVoice3

    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER)
    inst.instrument(tracer_provider=PROVIDER)  # a second call is a no-op
    assert isinstance(CosyVoice.__dict__["inference_sft"], wrapt.FunctionWrapper)
    assert "inference_sft" not in CosyVoice3.__dict__  # inherited: left to the base's wrapper
    inst.uninstrument()
    assert not isinstance(CosyVoice.__dict__["inference_sft"], wrapt.FunctionWrapper)
    EXPORTER.clear()
    list(models[3].inference_sft(TEXT, "中文女"))
    assert EXPORTER.get_finished_spans() == ()
    inst.instrument(tracer_provider=PROVIDER)
    try:
        assert not isinstance(CosyVoice.__dict__["inference_sft"].__wrapped__,
                              wrapt.FunctionWrapper)
        list(models[3].inference_sft(TEXT, "中文女"))
        names = [s.name for s in EXPORTER.get_finished_spans()]
        assert names.count(schema.INFERENCE) == 1
    finally:
        inst.uninstrument()


def test_missing_target_warns_once_and_the_rest_is_patched(models, caplog) -> None:
    from cosyvoice_otel.instrumentation.stage_map import parse_stage_spec

    inst = CosyVoiceInstrumentor()
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        inst.instrument(tracer_provider=PROVIDER, stages=[
            parse_stage_spec("ghost=cosyvoice.cli.model:CosyVoiceModel.no_such_method")])
    try:
        warnings = [r.getMessage() for r in caplog.records if "no_such_method" in r.getMessage()]
        assert len(warnings) == 1
        assert "cosyvoice.cli.model:CosyVoiceModel.no_such_method" in warnings[0]
        EXPORTER.clear()
        list(models[3].inference_sft(TEXT, "中文女"))
        assert schema.VOCODER in {s.name for s in EXPORTER.get_finished_spans()}
    finally:
        inst.uninstrument()


def test_failing_extractor_never_reaches_the_app(models, instrumented, monkeypatch) -> None:
    def broken(stage, result):
        raise RuntimeError("extractor bug")

    monkeypatch.setattr(EXTRACTORS["vocoder"], "end", broken)
    before = sum(errors.ERRORS.values())
    outputs = list(models[3].inference_sft(TEXT, "中文女"))
    assert outputs and outputs[0]["tts_speech"].shape[1] > 0
    assert sum(errors.ERRORS.values()) > before
    assert schema.VOCODER in {s.name for s in EXPORTER.get_finished_spans()}


def test_app_exceptions_pass_through_and_mark_the_span(models, instrumented) -> None:
    with pytest.raises(KeyError):
        list(models[3].inference_sft(TEXT, "no-such-speaker"))
    failed = [s for s in EXPORTER.get_finished_spans() if s.status.status_code == StatusCode.ERROR]
    names = {s.name for s in failed}
    assert {"tts_frontend.sft", schema.INFERENCE} <= names
    assert all(s.attributes[schema.ERROR_TYPE] == "KeyError" for s in failed)


def test_empty_asr_result_is_an_error_with_an_event(models, instrumented, tmp_path) -> None:
    from cosyvoice.utils.asr import TinyTranscriber

    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 16000)
    assert TinyTranscriber().generate(input=str(silent))[0]["text"] == ""
    span = next(s for s in EXPORTER.get_finished_spans() if s.name == schema.ASR)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes[schema.ERROR_TYPE] == "asr_empty_result"
    assert [e.name for e in span.events] == ["ASR returned empty result"]


def test_stage_map_file_adds_a_stage_without_code(models, tmp_path) -> None:
    stage_file = tmp_path / "stages.toml"
    stage_file.write_text(textwrap.dedent("""
        [[stage]]
        target = "cosyvoice.cli.frontend:CosyVoiceFrontEnd._extract_text_token"
        span = "text_tokenizer"
        attributes = { tokenizer = "demo" }
    """))
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER, stage_map=str(stage_file))
    try:
        EXPORTER.clear()
        list(models[3].inference_sft(TEXT, "中文女"))
        custom = [s for s in EXPORTER.get_finished_spans() if s.name == "text_tokenizer"]
        assert custom and custom[0].attributes["tokenizer"] == "demo"
    finally:
        inst.uninstrument()


def test_the_stage_file_is_read_once_per_process(models, tmp_path, process_settings,
                                                 monkeypatch) -> None:
    """The option's check, the instrumentor and its declarations share one parsed object."""
    from cosyvoice_otel import stage_rows

    stage_file = tmp_path / "stages.toml"
    stage_file.write_text(textwrap.dedent("""
        [[stage]]
        target = "cosyvoice.cli.frontend:CosyVoiceFrontEnd._extract_text_token"
        span = "text_tokenizer_once"
        [[declare]]
        span = "text_tokenizer_once"
        meaning = "the tokenizer, read once"
        [[reason]]
        name = "tokenizer_gone"
        meaning = "no tokenizer"
    """))
    reads: list[str] = []
    real = stage_rows._read
    monkeypatch.setattr(stage_rows, "_read", lambda path: reads.append(path) or real(path))
    process_settings({"COSYVOICE_TRACED_STAGE_MAP": str(stage_file)})  # checked: read
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER)  # rows and declarations: from that read
    try:
        assert reads == [str(stage_file)]
        assert schema.known_stage("text_tokenizer_once")
        (declared,) = [d for d in schema.all_spans() if d.name == "text_tokenizer_once"]
        assert declared.meaning == "the tokenizer, read once"  # the declaration's, not a row's
        assert schema.all_reasons()["tokenizer_gone"] == "no tokenizer"
        EXPORTER.clear()
        list(models[3].inference_sft(TEXT, "中文女"))
        assert "text_tokenizer_once" in {sp.name for sp in EXPORTER.get_finished_spans()}
        # a changed file is read again (its size and time differ), an unchanged one never
        stage_file.write_text(stage_file.read_text() + "\n# edited\n")
        stage_rows.stage_source(str(stage_file))
        stage_rows.stage_source(str(stage_file))
        assert len(reads) == 2
    finally:
        inst.uninstrument()


def test_a_code_row_naming_an_unknown_extractor_is_refused_with_why(models, caplog) -> None:
    from cosyvoice_otel.instrumentation.stage_map import Stage

    inst = CosyVoiceInstrumentor()
    row = Stage("cosyvoice.cli.frontend", "CosyVoiceFrontEnd._extract_text_token", "tok",
                "tokenizer_attrs")
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        inst.instrument(tracer_provider=PROVIDER, stages=[row])
    try:
        (line,) = [r.getMessage() for r in caplog.records if "tokenizer_attrs" in r.getMessage()]
        assert line.startswith("cosyvoice-otel: stage target cosyvoice.cli.frontend:CosyVoice"
                               "FrontEnd._extract_text_token names the unknown extractor "
                               "'tokenizer_attrs' (known: acoustic, asr, ")
        assert line.endswith("); not traced")
        EXPORTER.clear()
        list(models[3].inference_sft(TEXT, "中文女"))
        names = {sp.name for sp in EXPORTER.get_finished_spans()}
        assert "tok" not in names and schema.VOCODER in names  # the rest is traced
    finally:
        inst.uninstrument()


def test_cuda_sync_is_a_no_op_without_cuda(models) -> None:
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER, cuda_sync=True)
    try:
        EXPORTER.clear()
        list(models[3].inference_sft(TEXT, "中文女"))
        spans = EXPORTER.get_finished_spans()
        assert spans and all(schema.CUDA_SYNCED not in s.attributes for s in spans)
    finally:
        inst.uninstrument()


@pytest.mark.parametrize("order", ["instrument-then-import", "import-then-instrument"])
def test_patching_is_lazy_and_order_independent(order) -> None:
    script = textwrap.dedent(f"""
        import sys, wrapt
        from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
        if {order == "import-then-instrument"!r}:
            sys.path.append({str(EXAMPLES)!r})
            import cosyvoice.cli.cosyvoice
            CosyVoiceInstrumentor().instrument()
        else:
            CosyVoiceInstrumentor().instrument()
            assert "cosyvoice" not in sys.modules
            sys.path.append({str(EXAMPLES)!r})  # like upstream's webui: path set late
            import cosyvoice.cli.cosyvoice
        from cosyvoice.cli.model import CosyVoiceModel
        from cosyvoice.cli.cosyvoice import CosyVoice
        assert isinstance(CosyVoice.__dict__["inference_sft"], wrapt.FunctionWrapper)
        assert isinstance(CosyVoiceModel.__dict__["tts"], wrapt.FunctionWrapper)
        print("patched")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "patched"
    assert "warning" not in result.stderr.lower()


def test_span_ids_do_not_repeat_when_the_app_reseeds_random() -> None:
    """The webui seeds `random` per request; the default SDK ids would then repeat."""
    import random

    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    from cosyvoice_otel.sdk.id_generator import IsolatedRandomIdGenerator

    def ids_after_seed(generator) -> list[int]:
        random.seed(0)
        return [generator.generate_span_id() for _ in range(3)]

    stock = RandomIdGenerator()
    assert ids_after_seed(stock) == ids_after_seed(stock)  # the failure this prevents
    ours = IsolatedRandomIdGenerator()
    assert ids_after_seed(ours) != ids_after_seed(ours)


def test_launcher_selects_the_isolated_id_generator() -> None:
    script = ("from opentelemetry import trace; "
              "print(type(trace.get_tracer_provider().id_generator).__name__)")
    result = subprocess.run([str(BIN / "cosyvoice-traced"), "run", "--exporter", "none",
                             "--", "python", "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.stdout.strip() == "IsolatedRandomIdGenerator", result.stderr


def _limits(models, input_limits: str):
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER, input_limits=input_limits)
    EXPORTER.clear()
    return inst


@pytest.mark.parametrize(("limits", "flagged"), [("on", True), ("off", False),
                                                 ("text=500", False), ("text=20", True)])
def test_text_over_the_limit_is_a_normalized_error_on_the_request(models, limits,
                                                                  flagged) -> None:
    inst = _limits(models, limits)
    try:
        long_text = "A fairly long sentence for the limit. " * 7  # 266 characters
        run_request_text(models[3], long_text)
    finally:
        inst.uninstrument()
    spans = EXPORTER.get_finished_spans()
    inference = next(s for s in spans if s.name == schema.INFERENCE)
    request = next(s for s in spans if s.name == "request")
    if not flagged:
        assert inference.status.status_code != StatusCode.ERROR
        return
    for span in (inference, request):  # the request's top span shows it too
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes[schema.ERROR_TYPE] == "text_too_long"
    event = next(e for e in inference.events if e.name == "input limit exceeded")
    assert event.attributes[schema.TEXT_LENGTH] == len(long_text)


def run_request_text(model, text: str) -> None:
    with PROVIDER.get_tracer("test").start_as_current_span("request",
                                                           kind=trace.SpanKind.SERVER):
        list(model.inference_sft(text, "中文女"))


def test_prompt_audio_over_the_limit_is_invalid_input_duration(models, tmp_path) -> None:
    long_prompt = tmp_path / "long.wav"
    with wave.open(str(long_prompt), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x10\x00" * 16000 * 16)  # 16 s
    inst = _limits(models, "on")
    try:
        run_request(models[3], "zero_shot", False, str(long_prompt))
    finally:
        inst.uninstrument()
    spans = EXPORTER.get_finished_spans()
    audio = [s for s in spans if s.name.startswith("audio_preprocess.")]
    assert audio and all(s.attributes[schema.ERROR_TYPE] == "invalid_input_duration"
                         for s in audio)
    inference = next(s for s in spans if s.name == schema.INFERENCE)
    assert inference.attributes[schema.ERROR_TYPE] == "invalid_input_duration"


def test_durations_are_monotonic_when_the_wall_clock_steps_back(models, instrumented,
                                                               monkeypatch) -> None:
    import time as time_module

    import opentelemetry.sdk.trace as sdk_trace

    real = time_module.time_ns
    request = PROVIDER.get_tracer("test").start_span("request", kind=trace.SpanKind.SERVER)
    gen = models[3].inference_sft(TEXT, "中文女")
    with trace.use_span(request, end_on_exit=False):
        next(gen)  # the request and inference spans started with the real clock
    # the SDK's wall clock steps back an hour (an NTP correction) before the spans end
    monkeypatch.setattr(sdk_trace, "time_ns", lambda: real() - 3_600 * 10**9)
    list(gen)
    request.end()  # a plain SDK span (like the HTTP server span), not a stage span
    monkeypatch.undo()
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    for span in spans.values():
        assert 0 < span.end_time - span.start_time < 60 * 10**9, span.name
    assert spans[schema.INFERENCE].end_time <= spans["request"].end_time  # child inside


def test_hash_content_adds_a_salted_hash_never_the_text(models, monkeypatch) -> None:
    monkeypatch.setenv("COSYVOICE_TRACED_HASH_SALT", "deployment-salt")
    hashes = []
    for salt_env in ("deployment-salt", "deployment-salt", "other-salt"):
        monkeypatch.setenv("COSYVOICE_TRACED_HASH_SALT", salt_env)
        inst = CosyVoiceInstrumentor()
        inst.instrument(tracer_provider=PROVIDER, hash_content=True)
        EXPORTER.clear()
        try:
            list(models[3].inference_sft(TEXT, "中文女"))
        finally:
            inst.uninstrument()
        span = next(s for s in EXPORTER.get_finished_spans() if s.name == schema.INFERENCE)
        hashes.append(span.attributes[schema.TEXT_HASH])
        assert TEXT not in str(dict(span.attributes))
    assert hashes[0] == hashes[1] != hashes[2]  # same salt, same text: same hash
    assert len(hashes[0]) == 16


# -- every real entry point of a request -------------------------------------------------------

def spans_now() -> list[dict]:
    return as_zipkin(EXPORTER.get_finished_spans())


def parent_of(spans: list[dict], span: dict) -> dict:
    return next(s for s in spans if s["id"] == span.get("parentId"))


def pieces():
    yield "Hello there, this is "
    yield "streamed text input, "
    yield "piece by piece."


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("version", [2, 3])
def test_streaming_text_input_traces_bistream_and_its_text_tokens(models, instrumented,
                                                                  prompt_wav, version,
                                                                  stream) -> None:
    tracer = PROVIDER.get_tracer("test")
    with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER):
        outputs = list(models[version].inference_zero_shot(pieces(), "prompt words", prompt_wav,
                                                          stream=stream))
    spans = spans_now()
    assert outputs and check_synthesis(spans, "zero_shot", stream) == []
    check_hops(spans)
    inference = next(s for s in spans if s["name"] == schema.INFERENCE)
    assert inference["tags"][schema.TEXT_STREAMED] == "true"
    assert schema.TEXT_LENGTH not in inference["tags"]
    acoustic = next(s for s in spans if s["name"] == schema.ACOUSTIC_MODEL)
    assert acoustic["tags"][schema.TEXT_STREAMED] == "true"
    text_stream = next(s for s in spans if s["name"] == schema.TEXT_STREAM)
    assert parent_of(spans, text_stream)["name"] == schema.ACOUSTIC_MODEL
    assert int(text_stream["tags"][schema.TEXT_TOKENS]) == sum(len(p) for p in pieces())


def test_streamed_text_pieces_are_masked_in_this_trace(models, instrumented,
                                                        prompt_wav) -> None:

    tracer = PROVIDER.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        list(models[3].inference_zero_shot(pieces(), "prompt words", prompt_wav))
    pattern = masking.pattern_for(request.get_span_context().trace_id)
    assert pattern is not None and pattern.search("it said piece by piece.")


def test_vllm_path_is_traced_and_named_while_requests_share_the_engine(models,
                                                                        instrumented) -> None:
    model = models["vllm"]
    assert hasattr(model.model.llm, "vllm")
    results = run_parallel([lambda: run_request(model, "sft", True, "")] * 3)
    assert all(results)
    spans = spans_now()
    by_trace: dict[str, list[dict]] = {}
    for span in spans:
        by_trace.setdefault(span["traceId"], []).append(span)
    assert len(by_trace) == 3
    for trace_spans in by_trace.values():
        assert check_synthesis(trace_spans, "sft", True) == []
        acoustic = [s for s in trace_spans if s["name"] == schema.ACOUSTIC_MODEL]
        assert [s["tags"][schema.LLM_BACKEND] for s in acoustic] == ["vllm"] * len(acoustic)
    plain = run_request(models[3], "sft", False, "")
    assert plain
    acoustic = [s for s in spans_now() if s["name"] == schema.ACOUSTIC_MODEL]
    assert acoustic[-1]["tags"][schema.LLM_BACKEND] == "torch"


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_cached_speaker_has_no_prompt_audio_stages_and_names_its_id(models, instrumented,
                                                                       prompt_wav,
                                                                       version) -> None:
    model = models[version]
    assert model.add_zero_shot_spk("prompt words", prompt_wav, f"spk-v{version}")
    added = spans_now()
    root = next(s for s in added if s["name"] == schema.SPEAKER_ADD)
    assert root["tags"][schema.ZERO_SHOT_SPK_ID] == f"spk-v{version}"
    assert {"audio_preprocess.speech_tokenizer", "tts_frontend.zero_shot"} <= {
        s["name"] for s in added}
    EXPORTER.clear()
    tracer = PROVIDER.get_tracer("test")
    with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER):
        outputs = list(model.inference_zero_shot(TEXT, "", "", zero_shot_spk_id=f"spk-v{version}"))
    spans = spans_now()
    assert outputs and check_synthesis(spans, "zero_shot", False) == []
    assert not [s for s in spans if s["name"].startswith("audio_preprocess.")]
    inference = next(s for s in spans if s["name"] == schema.INFERENCE)
    assert inference["tags"][schema.ZERO_SHOT_SPK_ID] == f"spk-v{version}"
    frontend = next(s for s in spans if s["name"] == "tts_frontend.zero_shot")
    assert frontend["tags"][schema.ZERO_SHOT_SPK_ID] == f"spk-v{version}"
    # without the cache, the same checker demands the prompt-audio stages
    del inference["tags"][schema.ZERO_SHOT_SPK_ID]
    assert "missing stage spans" in " ".join(check_synthesis(spans, "zero_shot", False))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_speed_is_recorded_and_the_audio_seconds_follow_it(models, instrumented,
                                                            version) -> None:
    model = models[version]
    tracer = PROVIDER.get_tracer("test")
    seconds = {}
    for speed in (1.0, 1.5):
        EXPORTER.clear()
        with tracer.start_as_current_span("request"):
            outputs = list(model.inference_sft(TEXT, "中文女", speed=speed))
        spans = spans_now()
        assert check_synthesis(spans, "sft", False) == []
        inference = next(s for s in spans if s["name"] == schema.INFERENCE)
        assert float(inference["tags"][schema.SPEED]) == speed
        seconds[speed] = float(inference["tags"][schema.AUDIO_SECONDS])
        assert seconds[speed] == pytest.approx(
            sum(o["tts_speech"].shape[1] for o in outputs) / model.sample_rate, abs=1e-3)
    assert seconds[1.5] == pytest.approx(seconds[1.0] / 1.5, rel=0.05)


# -- stages follow the classes the model was built from ------------------------------------------

class ForkVocoder(torch.nn.Module):
    """A fork's own vocoder class: no stage-map row names it."""

    sampling_rate = 24000

    def inference(self, speech_feat, finalize=True):
        samples = torch.zeros(1, speech_feat.shape[2] * 480)
        return samples, samples


def test_a_class_the_map_never_named_is_traced_by_its_role(models, instrumented,
                                                            monkeypatch) -> None:
    model = models[3]
    monkeypatch.setattr(model.model, "hift", ForkVocoder())
    outputs = run_request(model, "sft", True, "")
    spans = spans_now()
    assert check_synthesis(spans, "sft", True) == []
    check_hops(spans)
    vocoders = [s for s in spans if s["name"] == schema.VOCODER]
    assert len(vocoders) == len(outputs)
    assert "tests.unit.test_instrumentor:ForkVocoder.inference" in instrumented.patched_targets()


def test_a_fork_subclass_overriding_a_traced_method_gets_one_span_per_call(models,
                                                                            instrumented,
                                                                            monkeypatch) -> None:
    from cosyvoice.hifigan.generator import CausalHiFTGenerator

    class LoudVocoder(CausalHiFTGenerator):
        def inference(self, speech_feat, finalize=True):  # calls the (traced) base
            speech, source = super().inference(speech_feat, finalize)
            return speech * 2, source

    hift = models[3].model.hift
    loud = LoudVocoder(channels=64, sampling_rate=hift.sampling_rate)
    loud.load_state_dict(hift.state_dict())
    monkeypatch.setattr(models[3].model, "hift", loud)
    run_request(models[3], "sft", True, "")
    spans = spans_now()
    check_hops(spans)  # exactly one vocoder span under each token2wav
    assert any(t.endswith("LoudVocoder.inference") for t in instrumented.patched_targets())


def test_roles_are_undone_by_uninstrument_and_redone_by_the_next_instrument(models) -> None:
    from cosyvoice.hifigan.generator import CausalHiFTGenerator

    model = models[3]
    original = model.model.hift
    model.model.hift = ForkVocoder()
    try:
        inst = CosyVoiceInstrumentor()
        inst.instrument(tracer_provider=PROVIDER)
        run_request(model, "sft", False, "")
        assert _is_wrapped(ForkVocoder.__dict__["inference"])
        inst.uninstrument()
        assert not _is_wrapped(ForkVocoder.__dict__["inference"])
        assert not _is_wrapped(CausalHiFTGenerator.__dict__["inference"])
        EXPORTER.clear()
        inst.instrument(tracer_provider=PROVIDER)
        run_request(model, "sft", False, "")
        names = [s.name for s in EXPORTER.get_finished_spans()]
        assert names.count(schema.VOCODER) == names.count(schema.TOKEN2WAV) == 2
        inst.uninstrument()
    finally:
        model.model.hift = original
        EXPORTER.clear()


def _is_wrapped(value) -> bool:
    return isinstance(value, wrapt.FunctionWrapper)


def test_a_part_without_the_traced_method_is_one_warning(models, instrumented, monkeypatch,
                                                          caplog) -> None:
    class Mute(torch.nn.Module):  # a part whose class lacks inference: no span, one warning
        sampling_rate = 24000

    monkeypatch.setattr(models[3].model, "hift", Mute())
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        for _ in range(2):
            with pytest.raises(AttributeError):
                run_request(models[3], "sft", False, "")
    warnings = [r.getMessage() for r in caplog.records if "Mute.inference" in r.getMessage()]
    assert len(warnings) == 1 and "role hift.inference" in warnings[0]


def test_a_user_row_on_a_base_class_traces_overrides_defined_before_instrument(
        models, monkeypatch) -> None:
    import types as pytypes

    from cosyvoice_otel.instrumentation.stage_map import parse_stage_spec

    module = pytypes.ModuleType("fork_engine")
    exec(textwrap.dedent("""
        class Base:
            def run(self, n):
                return n + 1
        class Override(Base):
            def run(self, n):
                return super().run(n) * 10
        class Inherits(Base):
            pass
    """), module.__dict__)
    monkeypatch.setitem(sys.modules, "fork_engine", module)
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER, stages=[parse_stage_spec("step=fork_engine:Base.run")])
    try:
        EXPORTER.clear()
        assert module.Override().run(1) == 20 and module.Inherits().run(1) == 2
        assert [s.name for s in EXPORTER.get_finished_spans()] == ["step", "step"]
        assert {"fork_engine:Base.run", "fork_engine:Override.run"} <= set(inst.patched_targets())
    finally:
        inst.uninstrument()
        EXPORTER.clear()
    assert not _is_wrapped(module.Override.__dict__["run"])


def test_an_optional_role_missing_from_a_version_is_silent(models, instrumented, caplog) -> None:
    # v1's TransformerLM has no inference_bistream (a v2/v3 method): not worth a warning
    with caplog.at_level(logging.DEBUG, logger="cosyvoice_otel"):
        run_request(models[1], "sft", False, "")
    assert check_synthesis(spans_now(), "sft", False) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_uninstrument_undoes_all_that_instrument_did() -> None:
    """Hooks and patches (stage targets, Gradio), in a fresh process. The instrumentor only
    instruments: it touches neither the SDK's span clock nor SIGTERM (sdk/lifecycle.py,
    installed by the configurator, does)."""
    script = textwrap.dedent("""
        import inspect, signal, sys
        sys.path.insert(0, "examples")
        import wrapt
        from opentelemetry.sdk.trace import Span
        from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor

        def ours():
            import cosyvoice.cli.cosyvoice as api, gradio.queueing as q
            places = [(Span, "start"), (Span, "end"), (api.CosyVoice, "inference_sft"),
                      (q.Queue, "process_events")]
            return [f"{o.__name__}.{a}" for o, a in places
                    if isinstance(inspect.getattr_static(o, a), wrapt.FunctionWrapper)]

        inst = CosyVoiceInstrumentor()
        inst.instrument()
        print("on", signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, ours())
        inst.uninstrument()
        print("off", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, ours())
        import cosyvoice.llm.llm  # a hook firing after uninstrument does nothing
        print("late", isinstance(inspect.getattr_static(cosyvoice.llm.llm.Qwen2LM, "inference"),
                                 wrapt.FunctionWrapper))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "on False ['CosyVoice.inference_sft', 'Queue.process_events']", lines
    assert lines[1] == "off True []"
    assert lines[2] == "late False"


# -- why a request was slow: concurrency, warm-up, end reason, configuration ----------------------

def inference_spans() -> list:
    return [s for s in EXPORTER.get_finished_spans() if s.name == schema.INFERENCE]


def test_end_reason_and_inflight_on_the_real_engine(models, instrumented) -> None:
    from cosyvoice_otel.instrumentation.extractors import ENGINE

    base = ENGINE.inflight
    model = models[3]
    first = model.inference_sft(TEXT, "中文女", stream=True)
    next(first)  # inside the engine
    second = model.inference_sft(TEXT, "中文女", stream=True)
    next(second)
    assert ENGINE.inflight == base + 2
    first.close()  # the client went away mid-stream
    list(second)
    with pytest.raises(ValueError):
        list(model.inference_sft("bad\x00text", "中文女"))
    assert ENGINE.inflight == base
    spans = inference_spans()
    assert [(s.attributes[schema.END_REASON], s.attributes[schema.INFLIGHT]) for s in spans] == [
        ("interrupted", base + 1), ("completed", base + 2), ("error", base + 1)]
    assert spans[0].attributes[schema.ABANDONED] is True


def test_the_request_carries_genai_usage_and_the_models_configuration(models, instrumented,
                                                                      prompt_wav) -> None:
    import hashlib

    model = models[3]
    outputs = run_request(model, "zero_shot", True, prompt_wav)
    spans = EXPORTER.get_finished_spans()
    request = next(s for s in spans if s.name == schema.INFERENCE).attributes
    acoustic = [s.attributes for s in spans if s.name == schema.ACOUSTIC_MODEL]
    assert request[schema.GENAI_OUTPUT_TOKENS] == sum(a[schema.SPEECH_TOKENS] for a in acoustic)
    assert request[schema.GENAI_INPUT_TOKENS] > len(TEXT)  # the text and the prompt text
    assert request[schema.GENAI_VOICE] == "zero_shot"
    assert request[schema.GENAI_MODEL] == os.path.basename(model.model_dir)
    assert (request[schema.MODEL_VERSION], request[schema.FP16], request[schema.LOAD_VLLM],
            request[schema.LOAD_JIT], request[schema.LOAD_TRT]) == (3, False, False, False, False)
    config = Path(model.model_dir, "cosyvoice3.yaml").read_bytes()
    assert request[schema.CONFIG_HASH] == hashlib.sha256(config).hexdigest()[:12]
    assert request[schema.DEVICE] == "cpu" and request[schema.TORCH_VERSION] == torch.__version__
    assert request[schema.LLM_FIRST_TOKEN_MS] > 0
    chunks = [e for e in next(s for s in spans if s.name == schema.INFERENCE).events
              if e.name == schema.CHUNK_EVENT]
    assert len(chunks) == len(outputs)
    assert sum(e.attributes[schema.CHUNK_AUDIO_SECONDS] for e in chunks) == pytest.approx(
        sum(o["tts_speech"].shape[1] for o in outputs) / model.sample_rate, abs=1e-3)
    vllm = run_request(models["vllm"], "sft", False, "")
    assert vllm
    last = inference_spans()[-1].attributes
    assert last[schema.LOAD_VLLM] is True and last[schema.GENAI_VOICE] == "中文女"


@pytest.mark.parametrize("spec", ["2.0", "2.4"])
def test_a_streamed_response_the_client_left_ends_its_stages_as_interrupted(
        models, instrumented, spec) -> None:
    """Starlette's StreamingResponse over the app's generator, driven as an ASGI app whose
    client disconnects after the first chunk (ASGI 2.0: told by receive(); 2.4: send() raises,
    as uvicorn's does). The generator stays referenced here, so the garbage collector cannot be
    what ends it: the response's scope must."""
    import asyncio

    from starlette.requests import ClientDisconnect
    from starlette.responses import StreamingResponse

    model = models[3]
    outputs = model.inference_sft(TEXT * 4, "中文女", stream=True)
    body = (o["tts_speech"].numpy().tobytes() for o in outputs)
    chunks: list[bytes] = []
    first_chunk = asyncio.Event()

    async def send(message: dict) -> None:
        if message.get("type") == "http.response.body" and message.get("body"):
            if chunks and spec == "2.4":
                raise OSError("client disconnected")
            chunks.append(message["body"])
            first_chunk.set()

    async def receive() -> dict:
        await first_chunk.wait()
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [],
             "asgi": {"spec_version": spec}}

    async def serve() -> None:
        try:
            await StreamingResponse(body, media_type="audio/L16")(scope, receive, send)
        except ClientDisconnect:
            pass

    asyncio.run(serve())
    assert chunks
    ended = {s.name for s in EXPORTER.get_finished_spans()}
    assert {schema.MODEL_TTS, schema.TOKEN2WAV} <= ended  # the request's inner stages too
    request = [s for s in EXPORTER.get_finished_spans() if s.name == schema.INFERENCE]
    assert len(request) == 1, "the response's end ended the request's stages"
    assert request[0].attributes[schema.END_REASON] == "interrupted"
    assert request[0].attributes[schema.ABANDONED] is True
    assert len(chunks) < 4  # it did leave early


@pytest.mark.parametrize("version", [1, 2])
def test_a_jit_model_is_traced_and_says_so(make_model, instrumented, version) -> None:
    """load_jit replaces an inner part (flow.encoder) with TorchScript: the traced methods are
    the same, every stage is there, and the request reads load_jit from the object."""
    from cosyvoice.cli.cosyvoice import AutoModel

    model = AutoModel(model_dir=str(make_model(version)), load_jit=True)
    assert type(model.model.flow.encoder).__name__ == "RecursiveScriptModule"
    run_request(model, "sft", True, "")
    spans = as_zipkin(EXPORTER.get_finished_spans())
    assert check_synthesis(spans, "sft", True) == []
    check_hops(spans)
    request = next(s for s in EXPORTER.get_finished_spans() if s.name == schema.INFERENCE)
    assert request.attributes[schema.LOAD_JIT] is True


def test_instrument_resolves_the_settings_once_so_a_bad_value_warns_once(models, monkeypatch,
                                                                          caplog) -> None:
    monkeypatch.setenv("COSYVOICE_TRACED_STAGE_SPANS", "maybe")
    inst = CosyVoiceInstrumentor()
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        inst.instrument(tracer_provider=PROVIDER)
    try:
        lines = [r.getMessage() for r in caplog.records
                 if "COSYVOICE_TRACED_STAGE_SPANS" in r.getMessage()]
        assert len(lines) == 1, lines
        assert inst.options.stage_spans is True  # the default
    finally:
        inst.uninstrument()


def test_a_zero_shot_prompt_carries_its_six_quality_figures(models, instrumented,
                                                            prompt_wav) -> None:
    tracer = PROVIDER.get_tracer("test")
    with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER):
        list(models[3].inference_zero_shot(TEXT, "prompt words", prompt_wav))
    spans = spans_now()
    figures = (schema.AUDIO_FORMAT, schema.AUDIO_RMS_DBFS, schema.AUDIO_PEAK_DBFS,
               schema.AUDIO_CLIPPING, schema.AUDIO_SILENCE, schema.AUDIO_SNR_DB)
    prompt_spans = [s for s in spans if s["name"].startswith("audio_preprocess.")]
    assert len(prompt_spans) == 6  # three per sentence
    for span in prompt_spans:
        assert all(key in span["tags"] for key in figures), span["tags"]
        assert span["tags"][schema.AUDIO_FORMAT] == "wav/pcm16"
    inference = next(s for s in spans if s["name"] == schema.INFERENCE)
    assert {k: inference["tags"][k] for k in figures} == {
        k: prompt_spans[0]["tags"][k] for k in figures}
    assert float(inference["tags"][schema.AUDIO_SNR_DB]) > 40  # a tone switched on and off


# ---------------------------------------------------------------- what the listener hears

@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_stream_slowed_at_one_hop_stalls_there_on_every_version(models, instrumented,
                                                                 monkeypatch, version) -> None:
    """In process, per version: the demo engine's hop 1 sleeps; the stall is at chunk 1,
    summed on the request, and its time went to the vocoder; the first chunk's parts add up."""
    monkeypatch.setenv("COSYVOICE_DEMO_SLOW_HOP", "1:1.2")
    from cosyvoice_otel.instrumentation import listener

    attribute = listener.late_part

    def paused(*args):  # a busy machine pauses the thread between a chunk and its event
        time.sleep(0.03)
        return attribute(*args)

    monkeypatch.setattr(listener, "late_part", paused)
    chunks = run_request(models[version], "sft", True, "")
    inference = next(s for s in EXPORTER.get_finished_spans() if s.name == schema.INFERENCE)
    attrs = inference.attributes
    events = [dict(e.attributes) for e in inference.events if e.name == schema.CHUNK_EVENT]
    gaps = [e[schema.CHUNK_GAP_MS] for e in events]
    assert len(chunks) > 2 and [i for i, g in enumerate(gaps) if g > 100] == [1], gaps
    assert events[1][schema.CHUNK_LATE_PART] == "vocoder"
    assert attrs[schema.PLAYBACK_STALL_MS] == pytest.approx(sum(gaps), abs=0.01)
    # each event is stamped at its chunk's arrival (on the span clock): the listener replayed
    # from the events' own times and audio hears the same gaps, to the microsecond
    chunk_events = [e for e in inference.events if e.name == schema.CHUNK_EVENT]
    play_end, replayed = None, []
    for event in chunk_events:
        at, seconds = event.timestamp / 1e9, event.attributes[schema.CHUNK_AUDIO_SECONDS]
        replayed.append(0.0 if play_end is None else max(0.0, at - play_end) * 1000)
        play_end = (at if play_end is None else max(play_end, at)) + seconds
    assert replayed == pytest.approx(gaps, abs=0.2)  # (audio seconds are rounded to 0.1 ms)
    assert (attrs[schema.PLAYBACK_STALLS], attrs[schema.PLAYBACK_LATE_PART]) == (1, "vocoder")
    parts = [attrs[schema.FIRST_CHUNK_PARTS[p]] for p in schema.PARTS]
    assert sum(parts) == pytest.approx(attrs[schema.FIRST_CHUNK_REQUEST_MS], abs=0.01)
    assert min(parts) >= 0
    # the output digest: the float32 samples the app received, in order
    import hashlib

    samples = b"".join(c["tts_speech"].numpy().astype("<f4").tobytes() for c in chunks)
    assert attrs[schema.OUTPUT_DIGEST] == hashlib.sha256(samples).hexdigest()[:16]
    assert attrs[schema.OUTPUT_SAMPLES] == len(samples) // 4
    assert len(attrs[schema.INPUT_FINGERPRINT]) == 16
    assert attrs[schema.GENAI_AUDIO_OUTPUT_TOKENS] == attrs[schema.GENAI_OUTPUT_TOKENS] > 0
    assert attrs[schema.GENAI_INPUT_LANGUAGE] == "zh"  # TEXT has 你好


def test_playback_figures_for_requests_heard_chunk_by_chunk_only(models, instrumented) -> None:
    """Not streamed, several sentences: one chunk each, sent as they come (upstream's three
    apps do): playback figures. One sentence, not streamed: one chunk, nothing to stall."""
    tracer = PROVIDER.get_tracer("test")
    for text in ("Just one sentence here", TEXT):
        with tracer.start_as_current_span("request"):
            list(models[3].inference_sft(text, "中文女", stream=False))
    one, several = [s for s in EXPORTER.get_finished_spans() if s.name == schema.INFERENCE]
    assert one.attributes[schema.CHUNK_COUNT] == 1
    assert not [k for k in one.attributes if k.startswith("tts.playback.")]
    assert schema.FIRST_CHUNK_REQUEST_MS in one.attributes  # its first chunk has parts
    assert several.attributes[schema.CHUNK_COUNT] == 2
    assert several.attributes[schema.PLAYBACK_CONTINUOUS] is True
    gaps = [e.attributes[schema.CHUNK_GAP_MS] for e in several.events
            if e.name == schema.CHUNK_EVENT]
    assert len(gaps) == 2 and gaps[0] == 0.0


def test_a_hook_of_an_earlier_instrumentation_never_patches_with_its_options(
        tmp_path, monkeypatch) -> None:
    """wrapt keeps every post-import hook: a module first imported after uninstrument() and a
    new instrument() with other options must be patched as the NEW options say (seen: a gRPC
    module imported late got the trace-response patch of an earlier, 'on' instrumentation)."""
    from cosyvoice_otel.instrumentation import instrumentor as module

    (tmp_path / "late_engine_mod.py").write_text("def run(n):\n    return n + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "late_engine_mod", raising=False)

    def make(tracer, enabled):
        def wrapper(wrapped, instance, args, kwargs):
            return wrapped(*args, **kwargs)
        return wrapper

    row = module.Patch("late_engine_mod", "run", make, "trace_response")
    monkeypatch.setattr(module, "PATCHES", (row,))
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER, trace_response=True)
    inst.uninstrument()
    inst.instrument(tracer_provider=PROVIDER, trace_response=False)
    try:
        import late_engine_mod

        assert not _is_wrapped(late_engine_mod.__dict__["run"])
    finally:
        inst.uninstrument()
        sys.modules.pop("late_engine_mod", None)
