"""One request, one complete trace, through real Gradio (5.4.0 and newest 6.x) into real Zipkin.

The demo webui runs UNMODIFIED under `cosyvoice-traced run`; each request carries a trace id
chosen here (B3 single, B3 multi or W3C) and goes through `/gradio_api/queue/join` or
`/gradio_api/call/{api}`. The trace read back from Zipkin must hold the complete stage tree.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from pathlib import Path

import pytest

from cosyvoice_otel import schema
from cosyvoice_otel.tools.checks import check_synthesis
from cosyvoice_otel.tools.gradio_rest import GradioRest

from ..support.helpers import (
    ROOT,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    run_parallel,
    unavailable,
)

pytestmark = pytest.mark.zipkin

VENVS = {"gradio6": ROOT / ".venv", "gradio5.4": ROOT / ".venv-gradio5"}
MODES = {"sft": "pretrained voice", "zero_shot": "3s fast clone",
         "cross_lingual": "cross-lingual clone", "instruct2": "instruct",
         "vc": "voice conversion"}
TEXT = "Tracing a synthesis request. 这是第二句话。"
FORMATS = itertools.cycle(["b3single", "b3multi", "w3c"])


def trace_headers(fmt: str, trace_id: str) -> dict[str, str]:
    span_id = new_span_id()
    if fmt == "b3single":
        return {"b3": f"{trace_id}-{span_id}-1"}
    if fmt == "b3multi":
        return {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}
    return {"traceparent": f"00-{trace_id}-{span_id}-01"}


@pytest.fixture(scope="module")
def tiny_model(make_model) -> Path:
    return make_model(3)


def start_webui(launch_app, zipkin, tiny_model: Path, venv: str, *flags: str,
                service: str | None = None):
    bin_dir = VENVS[venv] / "bin"
    if not (bin_dir / "cosyvoice-traced").exists():
        unavailable(f"{VENVS[venv]} is missing (.ci/setup creates it)",
                    f"{VENVS[venv]} is missing; run .ci/setup")
    port = free_port()
    service = f"{service or 'webui-' + venv.replace('.', '')}-{secrets.token_hex(3)}"  # per test: any order
    env = app_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                  GRADIO_ANALYTICS_ENABLED="False")
    app = launch_app([str(bin_dir / "cosyvoice-traced"), "run", "--zipkin-endpoint",
                      zipkin.endpoint, "--service-name", service, *flags, "--",
                      "python", "examples/webui.py", "--port", str(port), "--model_dir",
                      str(tiny_model)], env, port)
    return app, service


def request(app_url: str, path: str, mode: str, stream: bool, prompt: Path,
            trace_id: str) -> list:
    client = GradioRest(app_url, headers=trace_headers(next(FORMATS), trace_id))
    upload = client.upload(prompt) if mode != "sft" else None
    data = [TEXT, MODES[mode], "中文女", "", upload, None,
            "speak slowly" if mode == "instruct2" else "", 0, stream, 1.0]
    return client.join("generate_audio", data) if path == "join" else \
        client.call("generate_audio", data)


def read_complete(zipkin, trace_id: str, mode: str, stream: bool) -> list[dict]:
    client = zipkin.client()
    return client.wait_for_trace(trace_id, lambda spans: not check_synthesis(spans, mode, stream),
                                 timeout=30)


@pytest.mark.parametrize("venv", sorted(VENVS))
def test_every_mode_and_path_gives_one_complete_trace(zipkin, launch_app, tiny_model,
                                                      prompt_file, venv) -> None:
    app, service = start_webui(launch_app, zipkin, tiny_model, venv)
    sent = []
    for (mode, stream), path in itertools.product(
            itertools.product(MODES, (False, True)), ("join", "call")):
        trace_id = new_trace_id()
        output = request(app.url, path, mode, stream, prompt_file, trace_id)
        assert output and output[0], f"{mode} stream={stream} via {path}: no audio"
        sent.append((trace_id, mode, stream, path))
    client = zipkin.client()
    for trace_id, mode, stream, path in sent:
        spans = read_complete(zipkin, trace_id, mode, stream)
        assert check_synthesis(spans, mode, stream) == [], f"{mode} stream={stream} via {path}"
        event = [s for s in spans if s["name"] == schema.GRADIO_EVENT]
        assert len(event) == 1 and float(event[0]["tags"][schema.QUEUE_WAIT_MS]) >= 0
        assert {s["localEndpoint"]["serviceName"] for s in spans} == {service}
        parts = first_chunk_parts(spans)
        assert (parts["prompt_audio"] > 0) is (mode != "sft"), (mode, parts)
        tags = next(s for s in spans if s["name"] == schema.INFERENCE)["tags"]
        # streamed, or two sentences yielded one by one (vc converts in one chunk): heard
        # chunk by chunk
        if not stream:
            assert (int(tags[schema.CHUNK_COUNT]) > 1) is (mode != "vc"), mode
        assert (schema.PLAYBACK_STALLS in tags) is (stream or mode != "vc"), (mode, stream)
    # no stage span of any request landed outside the trace its client started
    ours = {trace_id for trace_id, *_ in sent}
    stray = [t[0]["traceId"] for t in client.traces(service=service, span_name=schema.INFERENCE,
                                                    lookback_ms=3_600_000, limit=1000)
             if t[0]["traceId"] not in ours]
    assert stray == []


@pytest.mark.parametrize("venv", sorted(VENVS))
def test_concurrent_requests_give_disjoint_complete_traces(zipkin, launch_app, tiny_model,
                                                           prompt_file, venv) -> None:
    app, _ = start_webui(launch_app, zipkin, tiny_model, venv)
    ids = [new_trace_id() for _ in range(4)]
    run_parallel([lambda t=t, m=m: request(app.url, "join", m, True, prompt_file, t)
                  for t, m in zip(ids, ["sft", "zero_shot", "sft", "vc"], strict=True)])
    seen_span_ids: set[str] = set()
    queued = []
    for trace_id, mode in zip(ids, ["sft", "zero_shot", "sft", "vc"], strict=True):
        spans = read_complete(zipkin, trace_id, mode, True)
        assert check_synthesis(spans, mode, True) == []
        queued.append(first_chunk_parts(spans)["queue"])
        span_ids = {s["id"] for s in spans}
        assert not span_ids & seen_span_ids
        seen_span_ids |= span_ids
    assert max(queued) > 0, queued  # four at once through a queue of one: some waited


def first_chunk_parts(spans: list[dict]) -> dict[str, float]:
    """The first chunk's parts of a Gradio request: they add up to its first-chunk time, and
    the queue part is the event's queue wait."""
    tags = next(s for s in spans if s["name"] == schema.INFERENCE)["tags"]
    event = next(s for s in spans if s["name"] == schema.GRADIO_EVENT)
    parts = {p: float(tags[schema.FIRST_CHUNK_PARTS[p]]) for p in schema.PARTS}
    assert sum(parts.values()) == pytest.approx(float(tags[schema.FIRST_CHUNK_REQUEST_MS]),
                                                abs=1.0)
    assert min(parts.values()) >= 0, parts
    assert parts["queue"] == pytest.approx(float(event["tags"][schema.QUEUE_WAIT_MS]), abs=0.01)
    return parts


def test_without_the_bridge_stage_spans_leave_the_request_trace(zipkin, launch_app, tiny_model,
                                                                prompt_file) -> None:
    """The failure the bridge prevents: handler spans pile under the startup-events request."""
    # every route traced, as before the default exclusions: the startup-events request is there
    app, service = start_webui(launch_app, zipkin, tiny_model, "gradio6", "--no-gradio-bridge",
                               "--excluded-urls", "none", service="webui-no-bridge")
    trace_id = new_trace_id()
    request(app.url, "join", "sft", False, prompt_file, trace_id)
    client = zipkin.client()
    found = client.wait_for_trace(trace_id, lambda spans: any(
        s["name"] == "post /gradio_api/queue/join" for s in spans), timeout=20)
    assert found, "the join request itself is traced"
    problems = check_synthesis(found, "sft", False)
    assert any(p.startswith("missing stage spans") for p in problems)
    # the stage spans exist, but in the trace of GET /gradio_api/startup-events
    for _ in range(40):
        traces = client.traces(service=service, span_name=schema.INFERENCE,
                               lookback_ms=3_600_000, limit=10)
        if traces:
            break
        time.sleep(0.5)
    assert traces and all(t[0]["traceId"] != trace_id for t in traces)
    names = {s["name"] for s in client.trace(traces[0][0]["traceId"])}
    assert "get /gradio_api/startup-events" in names
