"""What a user SEES: our traces in Zipkin's own web UI, in headless Chromium.

Every fact comes from the page as drawn (tests/support/zipkin_ui.py): the tree from the rows
and the numbers on their collapse buttons, the times from the bars' pixels, tags and kinds
from the detail panel of one row per name and of every row with the error mark.

A demo request through Gradio (the queue: the event runs after the join call answered) and one
through the FastAPI runtime server, streamed with dozens of hops and over the input limit
(error marks): the trace page shows every stage, nested as the schema says, no bar outside its
parent's (but the queued event, which starts inside it), the error marks, the stage tags; the
search page finds the traces by the autocomplete keys; ``report --html`` renders. A copy of a
real trace with a stage removed and one re-parented, posted to the same Zipkin, must FAIL the
same checks (the checks can fail). A failing test leaves a screenshot in
``test-artifacts/zipkin-ui/``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.request
from pathlib import Path

import pytest
import requests

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.checks import check_synthesis

from ..support.helpers import BIN, ROOT, app_env, free_port, new_span_id, new_trace_id, unavailable
from ..support.zipkin_ui import CHROMIUM, ZipkinUI, as_spans, depth_problems, tag_problems
from .test_gradio import request as gradio_request
from .test_gradio import start_webui

pytestmark = [pytest.mark.zipkin, pytest.mark.xdist_group("browser")]
ARTEFACTS = ROOT / "test-artifacts" / "zipkin-ui"
LONG_TEXT = "Streaming many hops through the runtime server. " * 6  # > 200: text_too_long


@pytest.fixture
def ui(zipkin, request):
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing (.ci/setup installs Debian's chromium)",
                    f"{CHROMIUM} is missing; run .ci/setup")
    browser = ZipkinUI(zipkin.base_url, ARTEFACTS)
    yield browser
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        browser.screenshot(request.node.name)  # the page as it was when the test failed
    browser.close()


def ui_problems(rows, mode: str, stream: bool) -> list[str]:
    """Everything the trace page shows, judged: the stage tree as drawn, the depth steps, the
    error mark on each span that has an error tag and on no other."""
    problems = [p for p in check_synthesis(as_spans(rows), mode, stream)
                if "required attribute" not in p]  # judged where the panel was read:
    problems += tag_problems(rows) + depth_problems(rows)
    for row in rows:
        if row.read and row.error_mark != ("error" in row.tags):
            problems.append(f"{row.name}: error mark {row.error_mark}, error tag "
                            f"{row.tags.get('error')!r}")
    return problems


def read(zipkin, trace_id: str, mode: str, stream: bool) -> list[dict]:
    return zipkin.client().wait_for_trace(
        trace_id, lambda spans: not check_synthesis(spans, mode, stream), timeout=30)


def test_a_gradio_request_reads_right_in_zipkins_ui(zipkin, launch_app, make_model, ui) -> None:
    app, service = start_webui(launch_app, zipkin, make_model(3), "gradio6", service="ui-gradio")
    trace_id = new_trace_id()
    gradio_request(app.url, "join", "sft", False, None, trace_id)
    spans = read(zipkin, trace_id, "sft", False)
    rows = ui.trace(trace_id, service, len(spans))
    assert len(rows) == len(spans)
    assert ui_problems(rows, "sft", False) == []
    names = {row.name for row in rows}
    assert {s.GRADIO_EVENT, s.INFERENCE, s.ACOUSTIC_MODEL, s.FLOW, s.VOCODER} <= names
    event = next(row for row in rows if row.name == s.GRADIO_EVENT)
    join = next(row for row in rows if row.span_id == event.parent_id)
    assert join.name.endswith("/gradio_api/queue/join")
    # the queued event is drawn after the join call began and outlives it (a CONSUMER span:
    # the queue runs it after the call answered; the only span allowed outside its parent)
    assert event.kind == "CONSUMER" and join.bar[0] <= event.bar[0]
    assert event.bar[0] + event.bar[1] > join.bar[0] + join.bar[1]
    inference = next(row for row in rows if row.name == s.INFERENCE)
    assert inference.tags[s.MODE] == "sft" and inference.tags[s.END_REASON] == "completed"
    assert s.SPEECH_TOKENS in next(r for r in rows if r.name == s.ACOUSTIC_MODEL).tags

    assert_search_finds(ui, zipkin, service, (s.MODE, "sft"), trace_id)


def assert_search_finds(ui, zipkin, service: str, criterion: tuple[str, str],
                        trace_id: str) -> None:
    """The search bar offers our autocomplete keys and the key's values; a search by one finds
    the trace. Zipkin 3.6.1's own UI appends an empty condition (``key=value and ``) that its
    own server answers with nothing: then the results are empty and the same query, well
    formed, finds the trace through the API, and through the page when a free condition closes
    the query (README, Troubleshooting, says so); a Zipkin that sends it well formed must show
    the trace in its results."""
    key, value = criterion
    search = ui.search(service, [criterion])
    assert {s.MODE, s.ERROR_TYPE, s.END_REASON} <= set(search.keys_offered)
    assert value in search.values_offered[key]
    (query,) = search.query["annotationQuery"]
    assert query.startswith(f"{key}={value}")
    if query.rstrip().endswith(" and"):
        assert search.found == []
        well_formed = query.rstrip().removesuffix(" and")
        traces = zipkin.client().traces(service=service, annotation_query=well_formed,
                                        lookback_ms=3_600_000, limit=50)
        assert trace_id in {spans[0]["traceId"] for spans in traces}
        # lens leaves the "and" dangling when no free condition follows the autocomplete ones;
        # one that every span meets (the tag key otel.scope.name) closes it: the page finds it
        closed = f"{well_formed} and otel.scope.name"
        typed = ui.search_by_address(service, closed)
        assert typed.query["annotationQuery"] == [closed]
        assert trace_id in typed.found
    else:
        assert trace_id in search.found


def streamed_error_request(server_url: str, trace_id: str) -> bytes:
    resp = requests.get(f"{server_url}/inference_sft", timeout=60, headers={
        "X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(), "X-B3-Sampled": "1"},
        params={"tts_text": LONG_TEXT, "spk_id": "中文女", "stream_mode": "true"})
    assert resp.status_code == 200
    return resp.content


def traced_server(zipkin, launch_app, make_model, prefix: str):
    """Our FastAPI server on a tiny v3 demo model, traced into the shared Zipkin under a
    service name of its own: (app, service)."""
    port = free_port()
    service = f"{prefix}-{secrets.token_hex(3)}"
    app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint",
                      zipkin.endpoint, "--service-name", service, "--", "python",
                      "examples/server.py", "--port", str(port), "--model_dir",
                      str(make_model(3))], app_env(), port)
    return app, service


def test_a_streamed_request_with_many_hops_and_an_error_reads_right(zipkin, launch_app,
                                                                   make_model, ui,
                                                                   tmp_path) -> None:
    app, service = traced_server(zipkin, launch_app, make_model, "ui-server")
    trace_id = new_trace_id()
    assert len(streamed_error_request(app.url, trace_id)) > 2000
    spans = read(zipkin, trace_id, "sft", True)
    hops = [span for span in spans if span["name"] == s.TOKEN2WAV]
    assert len(hops) >= 12  # dozens of rows: lens draws them only when the window holds them
    rows = ui.trace(trace_id, service, len(spans))
    assert len(rows) == len(spans)
    assert ui_problems(rows, "sft", True) == []
    inference = next(row for row in rows if row.name == s.INFERENCE)
    assert inference.error_mark and inference.tags[s.ERROR_TYPE] == "text_too_long"
    server = next(row for row in rows if row.span_id == inference.parent_id)
    assert server.error_mark and server.kind == "SERVER"
    # what the client sent shows nowhere on the page, the query values included
    assert "Streaming many hops" not in ui.page.content()

    assert_search_finds(ui, zipkin, service, (s.ERROR_TYPE, "text_too_long"), trace_id)

    html = tmp_path / "report.html"
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "report", "--zipkin", zipkin.base_url,
                          "--service", service, "--include-warmup", "--html", str(html)],
                         cwd=ROOT, env=app_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ui.page.goto(html.as_uri())
    text = ui.page.inner_text("body")
    assert "1 requests" in text or "1 request" in text
    for stage in (s.ACOUSTIC_MODEL, s.TOKEN2WAV, s.FLOW, s.VOCODER):
        assert stage in text
    assert "text_too_long" in text  # errors by type
    assert ui.page.locator("svg").count() >= 1 and ui.console_errors == []


def post(zipkin, spans: list[dict]) -> None:
    req = urllib.request.Request(zipkin.endpoint, data=json.dumps(spans).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202


def test_the_ui_checks_fail_on_a_broken_tree(zipkin, launch_app, make_model, ui) -> None:
    """A real trace, copied under a new trace id with the vocoder of its first hop removed and
    a flow moved under the acoustic model: the checks of the page must name both."""
    app, service = traced_server(zipkin, launch_app, make_model, "ui-broken")
    trace_id = new_trace_id()
    resp = requests.get(f"{app.url}/inference_sft", timeout=60, params={
        "tts_text": "One sentence.", "spk_id": "中文女", "stream_mode": "false"},
        headers={"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(), "X-B3-Sampled": "1"})
    assert resp.status_code == 200
    spans = read(zipkin, trace_id, "sft", False)
    broken_id = new_trace_id()
    vocoders = [span for span in spans if span["name"] == s.VOCODER]
    acoustic = next(span for span in spans if span["name"] == s.ACOUSTIC_MODEL)
    copy = []
    for span in spans:
        if span is vocoders[0] and len(vocoders) == 1:
            continue  # the only vocoder: gone
        span = {**span, "traceId": broken_id}
        if span["name"] == s.FLOW:
            span["parentId"] = acoustic["id"]  # mis-parented
        copy.append(span)
    post(zipkin, copy)
    zipkin.client().wait_for_trace(broken_id, lambda got: len(got) == len(copy), timeout=30)
    rows = ui.trace(broken_id, service, len(copy))
    problems = ui_problems(rows, "sft", False)
    assert any("missing stage spans: vocoder" in p for p in problems), problems
    assert any(p.startswith("flow: parent is acoustic_model") for p in problems), problems
