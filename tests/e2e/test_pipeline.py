"""Production safety of the export path and of content: outage, black hole, spool cap, 400s,
a raising transport, hostile trace headers, and no private text anywhere Zipkin stored."""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import socket
import time
from pathlib import Path

import pytest
import requests
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from cosyvoice_otel.sdk.zipkin_http import ResilientZipkinExporter
from cosyvoice_otel.tools import zipkin_server

from ..support.helpers import (
    BIN,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    unavailable,
    wait_until,
)

TRACED = str(BIN / "cosyvoice-traced")


def hello_app(launch_app, endpoint: str, service: str, *flags: str):
    port = free_port()
    return launch_app([TRACED, "run", "--zipkin-endpoint", endpoint, "--service-name", service,
                       *flags, "--", "python", "tests/support/apps/hello_fastapi.py", "--port",
                       str(port)], app_env(), port)


def get(app, trace_id: str) -> None:
    resp = requests.get(f"{app.url}/synthesize/alice", timeout=10, headers={
        "X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(), "X-B3-Sampled": "1"})
    assert resp.status_code == 200


@pytest.mark.zipkin
def test_zipkin_outage_spools_and_every_span_arrives_after_restart(launch_app, tmp_path) -> None:
    port = free_port()
    try:
        server = zipkin_server.start(port=port)
    except zipkin_server.ZipkinServerError as exc:
        unavailable(str(exc))
    app = hello_app(launch_app, server.endpoint, "outage", "--spool-dir", str(tmp_path / "spool"),
                    "--export-timeout", "2")
    try:
        before = new_trace_id()
        get(app, before)
        assert server.client().wait_for_trace(before, timeout=20)
        server.stop()
        during = [new_trace_id() for _ in range(30)]
        for trace_id in during:  # the app keeps answering while Zipkin is away
            get(app, trace_id)
        assert wait_until(lambda: any((tmp_path / "spool").rglob("*.json"))), \
            "nothing was spooled"
        server = zipkin_server.start(port=port)
        client = server.client()
        missing = list(during)
        deadline = time.monotonic() + 90
        while missing and time.monotonic() < deadline:
            missing = [t for t in missing if not client.trace(t)]
            time.sleep(1)
        assert missing == [], f"{len(missing)} of {len(during)} traces never arrived"
        spans = client.trace(during[0])
        assert all("debug" not in span for span in spans)  # no forced debug flag
    finally:
        server.stop()


def test_a_black_holed_zipkin_never_fails_the_app(launch_app) -> None:
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)  # accepts connections into the backlog, never answers
    try:
        endpoint = f"http://127.0.0.1:{hole.getsockname()[1]}/api/v2/spans"
        app = hello_app(launch_app, endpoint, "black-hole", "--export-timeout", "1")
        for _ in range(30):  # each answered (get() waits at most 10 s: a hang fails it)
            get(app, new_trace_id())
        assert app.proc.poll() is None  # and the app is still up
    finally:
        hole.close()


def spans_of(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("t")
    for i in range(count):
        with tracer.start_as_current_span(f"span-{i}") as span:
            span.set_attribute("payload", "x" * 200)


def test_spool_cap_drops_and_counts_with_one_log_line(tmp_path, caplog, refused_endpoint) -> None:
    exporter = ResilientZipkinExporter(endpoint=refused_endpoint, timeout=1,
                                       spool_dir=str(tmp_path), spool_max_bytes=20_000)
    provider = TracerProvider(resource=Resource.create({"service.name": "cap"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        spans_of(provider, 200)
    assert exporter.spool.size <= 20_000
    assert exporter.counters["spooled"] > 0 and exporter.dropped["spool_cap"] > 0
    assert exporter.counters["spooled"] + exporter.dropped["spool_cap"] == 200
    drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_lines) == 1
    exporter.shutdown()


@pytest.mark.zipkin
def test_a_rejected_batch_is_dropped_once_not_retried(zipkin, tmp_path, caplog) -> None:
    exporter = ResilientZipkinExporter(endpoint=zipkin.endpoint, timeout=5,
                                       spool_dir=str(tmp_path), spool_max_bytes=1 << 20)
    exporter.spool.put(b'[{"traceId": "NOT-HEX", "id": "x"}]')
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter.replay()
    assert exporter.spool.oldest() is None and exporter.dropped == {"rejected": 1}
    assert sum("Zipkin refused them" in r.getMessage() for r in caplog.records) == 1
    exporter.shutdown()


def test_a_raising_transport_never_reaches_the_app(tmp_path, refused_endpoint) -> None:
    class Exploding(requests.Session):
        def post(self, *args, **kwargs):
            raise RuntimeError("transport bug")

    exporter = ResilientZipkinExporter(endpoint=refused_endpoint, timeout=5,
                                       spool_dir=str(tmp_path), spool_max_bytes=1 << 20,
                                       session=Exploding())
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans_of(provider, 3)  # would raise here if the exporter leaked the error
    assert exporter.dropped == {"export_error": 3}


HOSTILE = [
    {"traceparent": "00-ZZZZ-not-hex-01"},
    {"traceparent": "00-" + "A" * 32 + "-" + "B" * 16 + "-01"},
    {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"},
    {"traceparent": "ff-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    {"traceparent": "00-" + "a" * 8000},
    {"b3": "garbage"}, {"b3": "-" * 300}, {"b3": "a" * 32 + "-" + "b" * 15 + "-1"},
    {"X-B3-TraceId": "x" * 64, "X-B3-SpanId": "y" * 16}, {"X-B3-TraceId": "a" * 33},
    {"X-B3-TraceId": "A" * 32, "X-B3-SpanId": "B" * 16, "X-B3-Sampled": "maybe"},
    {"X-B3-SpanId": "c" * 16}, {"X-B3-Sampled": "1", "X-B3-Flags": "999"},
]


@pytest.mark.zipkin
def test_hostile_trace_headers_start_fresh_traces_and_never_fail(zipkin, launch_app) -> None:
    service = f"hostile-{secrets.token_hex(3)}"
    app = hello_app(launch_app, zipkin.endpoint, service)
    for headers in HOSTILE:
        resp = requests.get(f"{app.url}/synthesize/x", headers=headers, timeout=10)
        assert resp.status_code == 200, headers
    # repeated headers: two different traceparent values in one request (on its own route)
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.putrequest("GET", "/health")
    conn.putheader("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    conn.putheader("traceparent", "00-" + "c" * 32 + "-" + "d" * 16 + "-01")
    conn.endheaders()
    assert conn.getresponse().status == 200
    conn.close()
    client = zipkin.client()

    def servers() -> list[dict]:
        traces = client.traces(service=service, lookback_ms=600_000, limit=100)
        return [s for t in traces for s in t if s.get("kind") == "SERVER"]

    found = wait_until(lambda: (lambda got: got if len(got) == len(HOSTILE) + 1 else [])(
        servers()), timeout=30)
    assert len(found) == len(HOSTILE) + 1, f"{len(servers())} server spans"
    hostile = [s for s in found if s["tags"].get("http.route") == "/synthesize/{voice}"]
    assert len(hostile) == len(HOSTILE)
    assert [s for s in hostile if "parentId" in s] == []  # every one ignored: a fresh root each
    (repeated,) = [s for s in found if s["tags"].get("http.route") == "/health"]
    # the stock W3C propagator reads the first of repeated values; never anything else
    assert repeated.get("parentId") in (None, "b" * 16)


# ------------------------------------------------------------------------------- privacy

def canaries_in(zipkin, service: str, canaries: list[str]) -> list[str]:
    """Each canary found in what Zipkin stored, with the text around it."""
    stored = json.dumps(zipkin.client().traces(service=service, lookback_ms=3_600_000,
                                               limit=1000), ensure_ascii=False)
    return [stored[max(0, i - 300):i + 100] for c in canaries if (i := stored.find(c)) >= 0]


@pytest.mark.zipkin
def test_no_request_text_reaches_zipkin_from_any_path(zipkin, launch_app, make_model,
                                                      prompt_file) -> None:
    from cosyvoice_otel.tools.gradio_rest import GradioRest

    model = make_model(3)
    port_web, port_api = free_port(), free_port()
    service = f"privacy-{secrets.token_hex(3)}"
    for port, app in ((port_web, "webui"), (port_api, "server")):
        launch_app([TRACED, "run", "--zipkin-endpoint", zipkin.endpoint, "--service-name",
                    service, "--", "python", f"examples/{app}.py", "--port", str(port),
                    "--model_dir", str(model)], app_env(), port)
    canaries: list[str] = []

    def canary() -> str:
        canaries.append(f"CANARY{secrets.token_hex(5).upper()}")
        return canaries[-1]

    web = GradioRest(f"http://127.0.0.1:{port_web}")
    upload = web.upload(prompt_file)
    for mode in ("pretrained voice", "3s fast clone", "cross-lingual clone", "instruct",
                 "voice conversion"):
        for stream in (False, True):
            web.join("generate_audio", [f"Speak {canary()} now.", mode, "中文女",
                                        f"prompt {canary()}", upload, None,
                                        f"instruct {canary()}", 0, stream, 1.0])
    api = f"http://127.0.0.1:{port_api}"
    resp = requests.get(f"{api}/inference_sft", params={"tts_text": f"Query {canary()} text",
                                                        "spk_id": "中文女"}, timeout=60)
    assert resp.status_code == 200 and resp.content
    resp = requests.post(f"{api}/inference_zero_shot", timeout=60, data={
        "tts_text": f"Form {canary()} text", "prompt_text": f"prompt {canary()}"},
        files={"prompt_wav": Path(prompt_file).read_bytes()})
    assert resp.status_code == 200
    # an induced failure whose exception message quotes the text
    try:  # the stream breaks off: the generator raises after the 200 headers went out
        failing = requests.get(f"{api}/inference_sft", params={
            "tts_text": f"Broken {canary()}\x00 text", "spk_id": "中文女"}, timeout=60)
        assert failing.status_code >= 500 or not failing.content
    except requests.exceptions.ChunkedEncodingError:
        pass
    stored = wait_until(lambda: (lambda t: t if "exception.message" in json.dumps(t) else None)(
        zipkin.client().traces(service=service, lookback_ms=3_600_000, limit=1000)), timeout=30)
    assert stored, "the failure was traced"
    assert canaries_in(zipkin, service, canaries) == []



@pytest.mark.zipkin
@pytest.mark.parametrize(("rate", "exported"), [("1.0", True), ("0.0", False)])
def test_b3_defer_lets_the_local_sampler_decide(zipkin, launch_app, rate, exported) -> None:
    """No X-B3-Sampled: the stock propagator would drop the trace; here the ratio decides."""
    app = hello_app(launch_app, zipkin.endpoint, f"defer-{rate}", "--sampling-rate", rate)
    deferred, marker = new_trace_id(), new_trace_id()
    requests.get(f"{app.url}/synthesize/d", timeout=10,
                 headers={"X-B3-TraceId": deferred, "X-B3-SpanId": new_span_id()})
    requests.get(f"{app.url}/synthesize/m", timeout=10,  # explicitly sampled: always kept
                 headers={"b3": f"{marker}-{new_span_id()}-1"})
    client = zipkin.client()
    assert client.wait_for_trace(marker, timeout=20)
    spans = client.wait_for_trace(deferred, timeout=3 if not exported else 20)
    assert bool(spans) is exported
    for span in spans:
        assert "cosyvoice=defer" not in json.dumps(span)


@pytest.mark.zipkin
@pytest.mark.parametrize("rate", ["1.0", "0.1"])
def test_b3_deny_without_ids_is_honoured(zipkin, launch_app, rate) -> None:
    """`b3: 0` and `X-B3-Sampled: 0` with no ids are valid B3 for "do not trace": nothing of
    those requests is recorded, not even a failing one at a rate where keep-errors records
    local drops; `b3: 1` / `X-B3-Flags: 1` alone start a sampled trace even at rate 0.1."""
    service = f"deny-{rate}-{secrets.token_hex(3)}"
    app = hello_app(launch_app, zipkin.endpoint, service, "--sampling-rate", rate)
    for headers in ({"b3": "0"}, {"X-B3-Sampled": "0"}, {"X-B3-Sampled": "0", "X-B3-Flags": "0"}):
        assert requests.get(f"{app.url}/health", headers=headers, timeout=10).status_code == 200
        requests.get(f"{app.url}/fail/x", headers=headers, timeout=10)  # an error, denied too
    for headers in ({"b3": "1"}, {"X-B3-Flags": "1"}):
        requests.get(f"{app.url}/synthesize/accept", headers=headers, timeout=10)
    marker = new_trace_id()
    get(app, marker)
    client = zipkin.client()
    assert client.wait_for_trace(marker, timeout=20)

    def server_routes() -> list:
        traces = client.traces(service=service, lookback_ms=600_000, limit=100)
        return [s.get("tags", {}).get("http.route") for t in traces for s in t
                if s.get("kind") == "SERVER"]

    # one export thread sends in order: once the three accepted requests (sent after the
    # denied ones) are stored, a denied one that had been exported would be stored too
    routes = wait_until(lambda: (lambda r: r if r.count("/synthesize/{voice}") >= 3 else None)(
        server_routes()), timeout=20) or server_routes()
    assert "/health" not in routes and "/fail/{voice}" not in routes
    assert routes.count("/synthesize/{voice}") == 3  # two accept-only requests + the marker


@pytest.mark.zipkin
def test_an_input_limit_error_is_findable_with_annotation_query_error(zipkin, launch_app,
                                                                      make_model) -> None:
    from cosyvoice_otel.tools.gradio_rest import GradioRest

    port = free_port()
    service = f"limits-{secrets.token_hex(3)}"
    launch_app([TRACED, "run", "--zipkin-endpoint", zipkin.endpoint, "--service-name", service,
                "--", "python", "examples/webui.py", "--port", str(port), "--model_dir",
                str(make_model(3))], app_env(), port)
    trace_id = new_trace_id()
    long_text = "This request is far longer than the seed allows. " * 5
    GradioRest(f"http://127.0.0.1:{port}", headers={
        "b3": f"{trace_id}-{new_span_id()}-1"}).join(
        "generate_audio", [long_text, "pretrained voice", "中文女", "", None, None, "", 0, False,
                           1.0])
    client = zipkin.client()
    found: list = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not found:
        found = [t for t in client.traces(service=service, annotation_query="error",
                                          lookback_ms=600_000) if t[0]["traceId"] == trace_id]
        time.sleep(0.5)
    assert found, "annotationQuery=error does not find the request"
    # the request's top span ends last: wait for it, then it must carry the error too
    spans = client.wait_for_trace(trace_id, lambda sp: any(
        s["name"] == "gradio.event" for s in sp), timeout=20)
    event = next(s for s in spans if s["name"] == "gradio.event")
    assert event["tags"]["error.type"] == "text_too_long" and "error" in event["tags"]


@pytest.mark.zipkin
def test_ratio_sampling_keeps_every_failed_trace(zipkin, launch_app) -> None:
    """R=0.1 over 500 requests, 50 failing: every failure complete in Zipkin, successes ~10%."""
    app = hello_app(launch_app, zipkin.endpoint, f"ratio-{secrets.token_hex(3)}",
                    "--sampling-rate", "0.1")
    ok_ids, failed_ids = [], []
    for i in range(500):
        trace_id = new_trace_id()
        failing = i % 10 == 0
        # B3 without a sampled flag: the caller defers, so the local ratio decides
        # (a new connection each time: uvicorn closes one after an unhandled exception)
        resp = requests.get(f"{app.url}/{'fail' if failing else 'synthesize'}/v{i}", timeout=10,
                           headers={"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id()})
        assert resp.status_code == (500 if failing else 200)
        (failed_ids if failing else ok_ids).append(trace_id)
    client = zipkin.client()

    def server_error(spans: list[dict]) -> bool:
        return any(s.get("kind") == "SERVER" and "error" in s.get("tags", {}) for s in spans)

    missing = [t for t in failed_ids if not client.wait_for_trace(t, server_error, timeout=20)]
    assert missing == [], f"{len(missing)} of {len(failed_ids)} failed traces were not kept"
    kept_ok = sum(bool(client.trace(t)) for t in ok_ids)
    share = kept_ok / len(ok_ids)
    # binomial: n=450, p=0.1 -> sd 0.014; 3 sd
    assert abs(share - 0.1) <= 0.045, f"{kept_ok} of {len(ok_ids)} successful traces kept"


def test_error_keeping_buffer_is_bounded_and_counts_evictions(tmp_path) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    from cosyvoice_otel.sdk.keep_errors import ErrorKeepingProcessor
    from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler

    kept = InMemorySpanExporter()
    processor = ErrorKeepingProcessor(kept, max_traces=5, grace_s=60)
    provider = TracerProvider(sampler=DeferAwareRatioSampler(0.0, keep_errors=True))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    roots = [tracer.start_span(f"request-{i}") for i in range(10)]  # ten traces open at once
    for root in roots:  # a finished child in each: every trace holds buffered spans
        with tracer.start_as_current_span("child", context=trace.set_span_in_context(root)):
            pass
    assert len(processor._traces) <= 5 and processor.counters["evicted"] > 0
    failing = tracer.start_span("failing")
    failing.set_status(Status(StatusCode.ERROR, "boom"))
    failing.end()
    for root in roots:
        root.end()
    processor.force_flush()
    names = [s.name for s in kept.get_finished_spans()]
    assert names == ["failing"]  # only the failed trace is exported; nothing sampled at R=0
    processor.shutdown()


def test_a_full_spool_never_fails_synthesis(launch_app, make_model, tmp_path,
                                            refused_endpoint) -> None:
    port = free_port()
    app = launch_app([TRACED, "run", "--zipkin-endpoint", refused_endpoint, "--spool-dir",
                      str(tmp_path), "--spool-max-mb", "0.01", "--", "python",
                      "examples/server.py", "--port", str(port), "--model_dir",
                      str(make_model(3))], app_env(), port)
    for i in range(20):
        resp = requests.get(f"{app.url}/inference_sft", timeout=60, params={
            "tts_text": f"Request number {i}.", "spk_id": "中文女"}, headers={
            "traceparent": f"00-{new_trace_id()}-{new_span_id()}-01"})
        assert resp.status_code == 200 and len(resp.content) > 1000
    spooled = sum(f.stat().st_size for f in tmp_path.rglob("*.json"))
    assert spooled <= 0.01 * 1024 * 1024
