"""Refusals and fallbacks the generated mutants found no test running (issue 31): each is a
promise of its own (a clear error, never a traceback; a bad file refused with its reason;
a folder that is not ours never used), so each has its hostile input here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from cosyvoice_otel import stage_rows
from cosyvoice_otel.launcher import launcher
from cosyvoice_otel.sdk import spool as spool_module
from cosyvoice_otel.sdk.spool import Spool
from cosyvoice_otel.tools import net
from cosyvoice_otel.tools import report as rep

# -- the launcher's program and its instrument script


def test_minus_m_without_a_module_is_refused() -> None:
    with pytest.raises(launcher.LaunchError, match="missing module after -m"):
        launcher.resolve_program(["-m"])
    assert launcher.resolve_program(["-m", "http.server"], python="/py") == [
        "/py", "-m", "http.server"]


def test_opentelemetry_instrument_beside_python_then_on_path_else_an_error(
        monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "python"))
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(launcher.LaunchError, match="opentelemetry-instrument not found: pip "):
        launcher.find_instrument()
    tool = empty / "opentelemetry-instrument"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert launcher.find_instrument() == str(tool)
    (tmp_path / "venv").mkdir()
    beside = tmp_path / "venv" / "opentelemetry-instrument"
    beside.write_text("#!/bin/sh\n")
    assert launcher.find_instrument() == str(beside)  # this environment's own comes first


# -- a stage-map file: each bad row refused with where and why

@pytest.mark.parametrize(("text", "says"), [
    ('[[stage]]\ntarget = "no_colon"\nspan = "x"\n', "target must be module:Class.method"),
    ('[[stage]]\ntarget = "m:C.f"\nspan = ""\n', "span must be a non-empty string"),
    ('[[stage]]\ntarget = "m:C.f"\nspan = 5\n', "span must be a non-empty string"),
    ('[[stage]]\ntarget = "m:C.f"\nspan = "x"\nextractor = "nope"\n', "unknown extractor 'nope'"),
    ('[[stage]]\ntarget = "m:C.f"\nspan = "x"\nattributes = 3\n', "attributes must be a table"),
    ("", "no [[stage]], [[declare]] or [[reason]]"),
    ("title = 'only this'\n", "no [[stage]], [[declare]] or [[reason]]"),
])
def test_a_bad_stage_file_is_refused_with_its_reason(tmp_path, text, says) -> None:
    path = tmp_path / "stages.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(stage_rows.StageMapError) as refused:
        stage_rows.stage_source(str(path))
    assert says in str(refused.value) and str(path) in str(refused.value)


# -- waiting for an app's port

def test_an_app_that_exits_before_listening_is_said_with_its_status() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(net.PortWaitError, match="exited with status 3 before listening"):
        net.wait_for_port(net.free_port(), child, timeout=30)


def test_nothing_listening_in_time_is_said() -> None:
    with pytest.raises(net.PortWaitError, match=r"nothing listened on port \d+ within 0 s"):
        net.wait_for_port(net.free_port(), None, timeout=0.2)


def test_a_port_another_process_serves_is_not_taken_for_the_app() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert net.owns_listener(app.pid, port) is False
        assert net.owns_listener(os.getpid(), port) is True
        with pytest.raises(net.PortTakenError, match=f"port {port} is served by another"):
            net.wait_for_port(port, app, timeout=10)
    finally:
        app.kill()
        app.wait()
        taken.close()


def test_a_process_that_is_gone_owns_no_listener() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert net.owns_listener(gone.pid, 9) is None  # not known: no /proc entry to read


# -- the spool's folder and files

def test_a_spool_folder_of_another_user_is_refused(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder away")  # CI's container runs as root
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(PermissionError, match="belongs to another user"):
        spool_module.private_dir(folder)


def test_a_bad_folder_that_is_a_link_is_never_used(tmp_path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (spool.directory / "bad").symlink_to(elsewhere)
    path = spool.directory / "1-1-0.json"
    path.write_bytes(b"[]")
    spool.copy_aside(path, b"[]")  # a copy for a look: skipped, nothing written through it
    assert list(elsewhere.iterdir()) == [] and path.exists()
    spool.set_aside(path)  # not moved through the link either: the batch is removed
    assert list(elsewhere.iterdir()) == [] and not path.exists()


def test_a_folder_named_like_a_batch_is_not_one(tmp_path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    (spool.directory / "1-1-0.json").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        spool.read(spool.directory / "1-1-0.json")


def test_a_spool_folder_removed_under_it_lists_nothing(tmp_path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.directory.rmdir()
    assert spool.files() == [] and spool.oldest() is None


def test_a_live_process_of_another_user_is_alive() -> None:
    assert spool_module.pid_alive(1)  # init: exists, whoever owns it


# -- report's figures on nothing

def test_report_figures_of_nothing() -> None:
    assert rep.percentile([], 0.95) == 0.0
    with pytest.raises(rep.ReportError, match="--compare 'version': expected KEY=VALUE"):
        rep.parse_side("version")


# -- the redactor's JSON rendering of compound values

def test_compound_values_render_as_json_text_with_no_content_of_odd_objects() -> None:
    from cosyvoice_otel.sdk import redaction

    class Opaque:
        pass

    assert redaction._jsonable(float("nan")) == "nan" and redaction._jsonable(1.5) == 1.5
    assert redaction._jsonable(float("-inf")) == "-inf"
    assert redaction._jsonable(Opaque()) == "[unencodable Opaque]"
    deep: list = []
    for _ in range(redaction.MAX_DEPTH + 2):
        deep = [deep]
    rendered = redaction._json(deep)
    assert "[nested list]" in rendered
    assert redaction._json("already text") == "already text"
    assert redaction._json({"b": b"caf\xc3\xa9", 1: (2, 3)}) == '{"1": [2, 3], "b": "café"}'


def test_a_comparison_that_raises_counts_as_changed() -> None:
    from cosyvoice_otel.sdk import redaction

    class Odd:
        def __ne__(self, other):
            raise TypeError("no")

    assert redaction._differs(Odd(), 1) is True
    assert redaction._differs(1, 1) is False


def test_unreadable_input_limits_fall_back_to_the_defaults_with_one_warning(caplog,
                                                                        process_settings) -> None:
    import logging

    from cosyvoice_otel.instrumentation.options import Options

    default = Options.resolve({}, process_settings({}))
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        options = Options.resolve({"input_limits": "text=lots"}, process_settings({}))
    assert (options.max_text_chars, options.max_prompt_seconds) == (
        default.max_text_chars, default.max_prompt_seconds)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("cosyvoice-otel: input limits ") and "using the defaults" in line


def test_a_trace_file_that_cannot_be_written_is_counted_not_raised(tmp_path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cosyvoice_otel.sdk.file_exporter import ZipkinFileExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for name in ("a", "b"):
        with provider.get_tracer("t").start_as_current_span(name):
            pass
    exporter = ZipkinFileExporter(str(tmp_path))  # a folder: no file can replace it
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
    assert exporter.dropped == {"export_error": 2} and exporter.counters["sent"] == 0


def test_the_trace_file_comes_from_the_settings(tmp_path, process_settings) -> None:
    from cosyvoice_otel.sdk.configurator import build_exporter
    from cosyvoice_otel.sdk.file_exporter import ZipkinFileExporter
    from cosyvoice_otel.settings import EXPORTERS_BY_NAME

    chosen = process_settings({"COSYVOICE_TRACED_ZIPKIN_FILE": str(tmp_path / "traces.json")})
    built = build_exporter(EXPORTERS_BY_NAME["zipkin-file"], chosen)
    assert isinstance(built, ZipkinFileExporter) and built.path == str(tmp_path / "traces.json")


# -- bounds and ids

def test_exemplars_kept_between_scrapes_are_bounded_the_oldest_going_first(monkeypatch) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from cosyvoice_otel import schema as s
    from cosyvoice_otel.sdk import prometheus

    monkeypatch.setattr(prometheus, "MAX_KEPT_EXEMPLARS", 2)
    reader = InMemoryMetricReader()
    hist = MeterProvider(metric_readers=[reader]).get_meter("t").create_histogram(
        s.REQUEST_DURATION, unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0])
    tracer = TracerProvider().get_tracer("t")
    kept: dict = {}
    for seconds in (0.05, 0.5, 5.0):  # three buckets, one after the other
        with tracer.start_as_current_span("r"):
            hist.record(seconds, {s.MODE: "sft"})
        prometheus.to_families(reader.get_metrics_data(), kept)
    assert [key[2] for key in kept] == [1, 2]  # bucket 0's, the oldest, went first


def test_trace_and_span_ids_are_valid_distinct_and_not_the_apps_random() -> None:
    import random

    from opentelemetry import trace

    from cosyvoice_otel.sdk.id_generator import IsolatedRandomIdGenerator

    ids = IsolatedRandomIdGenerator()
    random.seed(7)
    first = (ids.generate_trace_id(), ids.generate_span_id())
    random.seed(7)  # an app reseeding the global random: our ids do not repeat
    second = (ids.generate_trace_id(), ids.generate_span_id())
    assert first != second
    for trace_id, span_id in (first, second):
        assert 0 < trace_id < 2 ** 128 and trace_id != trace.INVALID_TRACE_ID
        assert 0 < span_id < 2 ** 64
    assert len({ids.generate_trace_id() for _ in range(1000)}) == 1000


# -- report and the checks: each span judged by its own tags, stages in the schema's order

def _span(span_id: str, name: str, parent: str = "", kind: str = "", **tags: str) -> dict:
    span = {"traceId": "a" * 32, "id": span_id, "name": name, "timestamp": 1_000_000,
            "duration": 1000, "tags": dict(tags)}
    if parent:
        span["parentId"] = parent
    if kind:
        span["kind"] = kind
    return span


def test_report_counts_a_stage_error_on_the_stage_that_failed_only() -> None:
    from cosyvoice_otel import schema as s

    trace = [_span("1", "post /tts", kind="SERVER"),
             _span("2", s.INFERENCE, "1", **{"error": "vocoder_failed", s.MODE: "sft"}),
             _span("3", s.TEXT_NORMALIZE, "2"),
             _span("4", s.VOCODER, "2", error="vocoder_failed")]
    stages = rep.analyse([trace])["all"].stages
    assert {name: stats.errors for name, stats in stages.items()} == {
        s.INFERENCE: 1, s.TEXT_NORMALIZE: 0, s.VOCODER: 1}


def test_report_orders_every_frontend_mode_where_the_schema_has_the_frontend() -> None:
    from cosyvoice_otel import schema as s

    trace = [_span("1", s.INFERENCE, **{s.MODE: "sft"}), _span("2", s.VOCODER, "1"),
             _span("3", "tts_frontend.sft", "1"), _span("4", s.TEXT_NORMALIZE, "1")]
    order = rep._stage_order(rep.analyse([trace]))
    schema_order = [d.name for d in s.SPANS]
    assert order.index("tts_frontend.sft") < order.index(s.VOCODER)
    assert (order.index("tts_frontend.sft") < order.index(s.TEXT_NORMALIZE)) == (
        schema_order.index("tts_frontend.<mode>") < schema_order.index(s.TEXT_NORMALIZE))


def test_a_trace_with_two_inference_spans_is_a_problem_named_as_such() -> None:
    from cosyvoice_otel import schema as s
    from cosyvoice_otel.tools.checks import check_synthesis

    one = [_span("1", s.INFERENCE, **{s.MODE: "sft"})]
    two = one + [_span("2", s.INFERENCE, **{s.MODE: "sft"})]
    assert f"expected 1 {s.INFERENCE} span, found 2" in check_synthesis(two, "sft")
    assert not any("expected 1" in p for p in check_synthesis(one, "sft"))
    assert f"expected 1 {s.INFERENCE} span, found 0" in check_synthesis([], "sft")


# -- contained failures of tracing code: counted under their place, the app's call goes on

def test_a_request_whose_values_cannot_be_registered_still_runs_counted(monkeypatch) -> None:
    import asyncio
    from collections import Counter

    from opentelemetry.sdk.trace import TracerProvider

    from cosyvoice_otel import errors, masking
    from cosyvoice_otel.instrumentation import routes

    def broken(trace_id, values):
        raise RuntimeError("registry broke")

    monkeypatch.setattr(errors, "ERRORS", Counter())
    monkeypatch.setattr(masking, "remember", broken)
    wrapper = routes.endpoint_values(None, lambda: True)

    async def endpoint(**kwargs):
        return "spoken"

    with TracerProvider().get_tracer("t").start_as_current_span("POST /tts"):
        result = asyncio.run(wrapper(endpoint, None, (), {"values": {"tts_text": "x"}}))
    assert result == "spoken" and errors.ERRORS == {"fastapi run_endpoint_function": 1}


def test_unreadable_settings_turn_tracing_off_with_one_warning(monkeypatch, caplog) -> None:
    import logging

    from opentelemetry import trace

    from cosyvoice_otel.sdk import configurator

    def unreadable():
        raise ValueError("COSYVOICE_TRACED_SAMPLING_RATE: not a number")

    monkeypatch.setattr(configurator, "current", unreadable)
    before = trace.get_tracer_provider()
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        configurator.CosyVoiceConfigurator()._configure()
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: tracing is off: settings unreadable (ValueError: "
        "COSYVOICE_TRACED_SAMPLING_RATE: not a number)"]
    assert trace.get_tracer_provider() is before  # nothing was set up


def test_the_demo_stops_waiting_once_the_trace_file_holds_the_request(monkeypatch,
                                                                      tmp_path) -> None:
    import json

    from cosyvoice_otel.tools import demo as demo_module

    clock, slept = iter(range(10_000)), []
    monkeypatch.setattr(demo_module.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(demo_module.time, "sleep", slept.append)
    path = tmp_path / "traces.json"
    path.write_text(json.dumps([{"traceId": "t1", "name": "gradio.event"},
                                {"traceId": "t1", "name": "cosyvoice.inference"}]))
    demo_module._wait_for_file_trace(path, "t1", timeout=100)
    assert slept == []  # there at the first look: no waiting
    demo_module._wait_for_file_trace(path, "t2", timeout=5)  # another trace: waits, bounded
    assert 0 < len(slept) <= 5
