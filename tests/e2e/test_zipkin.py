"""End to end with the real Zipkin: a FastAPI app started by the launchers, traces read back.

Each request carries a trace id chosen here (B3 multi, B3 single, W3C traceparent); the trace must
appear in Zipkin under exactly that id, with our service name and a SERVER span naming the route.
"""

from __future__ import annotations

import json

import pytest
import requests

from ..support.helpers import (
    BIN,
    ROOT,
    app_env,
    context_headers,
    free_port,
    new_span_id,
    new_trace_id,
)

pytestmark = pytest.mark.zipkin

LAUNCHERS = {
    "cli": [str(BIN / "cosyvoice-traced"), "run", "--"],
    "launch.sh": [str(ROOT / "launch.sh")],
}


def server_span_ready(spans: list[dict]) -> bool:
    return any(s.get("kind") == "SERVER" for s in spans)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_client_trace_ids_arrive_in_zipkin(zipkin, launch_app, launcher) -> None:
    port = free_port()
    service = f"e2e-{launcher.replace('.', '-')}"
    env = app_env(COSYVOICE_TRACED_ZIPKIN_ENDPOINT=zipkin.endpoint,
                  COSYVOICE_TRACED_SERVICE_NAME=service)
    app = launch_app([*LAUNCHERS[launcher], "python", "tests/support/apps/hello_fastapi.py",
                      "--port", str(port)], env, port)
    client = zipkin.client()
    sent = {}
    for fmt, bits in (("b3multi", 128), ("b3single", 64), ("w3c", 128)):
        trace_id, span_id = new_trace_id(bits), new_span_id()
        resp = requests.get(f"{app.url}/synthesize/alice", headers=context_headers(fmt, trace_id,
                                                                               span_id), timeout=10)
        assert resp.status_code == 200
        sent[fmt] = (trace_id, span_id)
    for fmt, (trace_id, span_id) in sent.items():
        spans = client.wait_for_trace(trace_id, server_span_ready)
        server = [s for s in spans if s.get("kind") == "SERVER"]
        assert len(server) == 1, f"{fmt}: {spans}"
        span = server[0]
        assert span["traceId"] == trace_id.rjust(16, "0")
        assert span["parentId"] == span_id, fmt  # the client's span is the parent
        assert span["name"] == "get /synthesize/{voice}"
        assert span["localEndpoint"]["serviceName"] == service
        assert span["tags"]["http.route"] == "/synthesize/{voice}"
    assert service in client.services()


def test_unsampled_b3_request_is_not_exported(zipkin, launch_app) -> None:
    port = free_port()
    env = app_env(COSYVOICE_TRACED_ZIPKIN_ENDPOINT=zipkin.endpoint,
                  COSYVOICE_TRACED_SERVICE_NAME="e2e-unsampled")
    app = launch_app([*LAUNCHERS["cli"], "python", "tests/support/apps/hello_fastapi.py", "--port",
                      str(port)], env, port)
    dropped, kept = new_trace_id(), new_trace_id()
    requests.get(f"{app.url}/synthesize/a", headers={"b3": f"{dropped}-{new_span_id()}-0"},
                 timeout=10)
    requests.get(f"{app.url}/synthesize/a", headers=context_headers("w3c", kept, new_span_id()),
                 timeout=10)
    client = zipkin.client()
    # the sampled one arriving proves the exporter flushed; the unsampled one must not be there
    assert server_span_ready(client.wait_for_trace(kept, server_span_ready))
    assert client.trace(dropped) == []


def test_an_app_step_failing_before_the_engine_stores_no_text_and_keeps_its_reason(
        zipkin, launch_app) -> None:
    """Issue 30 through the real Zipkin: the request's text, sent in a JSON body, is masked
    in the exception, the figures (bytes, a mixed list, a mapping) and the status; the batch
    is not lost to a value JSON cannot encode; the declared reason wins over the exception."""
    from ..support.leaks import found

    port = free_port()
    env = app_env(COSYVOICE_TRACED_ZIPKIN_ENDPOINT=zipkin.endpoint,
                  COSYVOICE_TRACED_SERVICE_NAME="e2e-seams")
    app = launch_app([*LAUNCHERS["cli"], "python", "tests/support/apps/hello_fastapi.py",
                      "--port", str(port)], env, port)
    text = f"read CANARY{new_span_id()} aloud"
    trace_id = new_trace_id()
    resp = requests.post(f"{app.url}/rewrite", json={"text": text},
                         headers=context_headers("w3c", trace_id, new_span_id()), timeout=10)
    assert resp.status_code == 500
    spans = zipkin.client().wait_for_trace(
        trace_id, lambda got: any(s["name"] == "dialect_rewrite" for s in got)
        and server_span_ready(got))
    (step,) = [s for s in spans if s["name"] == "dialect_rewrite"]
    (server,) = [s for s in spans if s.get("kind") == "SERVER"]
    assert step["tags"]["error.type"] == server["tags"]["error.type"] == "rewrite_failed"
    assert "[REDACTED]" in json.dumps(step["annotations"])
    assert found(text, spans) == [] and found(text.encode().hex(), spans) == []
