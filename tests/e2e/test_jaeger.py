"""`--exporter otlp` straight into Jaeger (v1.76.0, built from the Go module proxy), read back
through Jaeger's query API: the full stage tree, its attributes, the error status, and none of
the request's text."""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest
import requests

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.checks import check_synthesis

from ..support import jaeger
from ..support.helpers import (
    BIN,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    unavailable,
    wait_for_port,
)

KINDS = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER", "consumer": "CONSUMER"}


@pytest.fixture
def jaeger_server(tmp_path):
    binary = jaeger.find_binary()
    if binary is None:
        unavailable("Jaeger was not built (.ci/setup builds it from the Go module proxy)",
                    "no Jaeger binary; run .ci/setup")
    otlp, query, grpc, health = (free_port() for _ in range(4))
    config = tmp_path / "jaeger.yaml"
    config.write_text(jaeger.config_yaml(otlp, query, grpc, health))
    log = (tmp_path / "jaeger.log").open("w")
    proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(query, proc, timeout=60)
        wait_for_port(otlp, proc, timeout=60)
        yield otlp, f"http://127.0.0.1:{query}"
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def as_zipkin(trace: dict) -> list[dict]:
    """Jaeger's query-API spans in the Zipkin shape ``check_synthesis`` reads: tags as strings
    (booleans as Zipkin writes them), the parent from the CHILD_OF reference, the kind from
    ``span.kind``."""
    spans = []
    for span in trace["spans"]:
        tags = {tag["key"]: (str(tag["value"]).lower() if isinstance(tag["value"], bool)
                             else str(tag["value"])) for tag in span.get("tags", [])}
        converted = {"traceId": span["traceID"], "id": span["spanID"],
                     "name": span["operationName"], "timestamp": span["startTime"],
                     "duration": span["duration"], "tags": tags}
        parents = [ref["spanID"] for ref in span.get("references", [])
                   if ref.get("refType") == "CHILD_OF"]
        if parents:
            converted["parentId"] = parents[0]
        if tags.get("span.kind") in KINDS:
            converted["kind"] = KINDS[tags["span.kind"]]
        spans.append(converted)
    return spans


def read_trace(query_url: str, trace_id: str, ready, timeout: float = 30) -> tuple[dict, list]:
    deadline = time.monotonic() + timeout
    raw, spans = {}, []
    while time.monotonic() < deadline:
        resp = requests.get(f"{query_url}/api/traces/{trace_id}", timeout=5)
        if resp.status_code == 200 and resp.json().get("data"):
            raw = resp.json()
            spans = as_zipkin(raw["data"][0])
            if ready(spans):
                break
        time.sleep(0.3)
    return raw, spans


def test_jaeger_shows_the_full_stage_tree_of_a_demo_request(jaeger_server, launch_app,
                                                            make_model) -> None:
    otlp, query_url = jaeger_server
    port = free_port()
    service = f"jaeger-{secrets.token_hex(3)}"
    app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--exporter", "otlp",
                      "--otlp-endpoint", f"http://127.0.0.1:{otlp}/v1/traces",
                      "--service-name", service, "--", "python", "examples/server.py",
                      "--port", str(port), "--model_dir", str(make_model(3))], app_env(), port)
    canary = f"CANARY{secrets.token_hex(5).upper()}"
    sent = {}
    for name, text in (("ok", f"Into Jaeger, {canary}. 第二句。"),
                       ("too long", f"{canary} " + "Over the seed's text limit. " * 8)):
        trace_id = new_trace_id()
        resp = requests.get(f"{app.url}/inference_sft", timeout=60, params={
            "tts_text": text, "spk_id": "中文女", "stream_mode": "false"}, headers={
            "X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(), "X-B3-Sampled": "1"})
        assert resp.status_code == 200 and len(resp.content) > 2000
        sent[name] = trace_id

    raw, spans = read_trace(query_url, sent["ok"],
                            lambda sp: not check_synthesis(sp, "sft", False))
    assert check_synthesis(spans, "sft", False) == []
    assert raw["data"][0]["processes"]
    assert {p["serviceName"] for p in raw["data"][0]["processes"].values()} == {service}
    inference = next(sp for sp in spans if sp["name"] == s.INFERENCE)
    assert inference["tags"][s.MODE] == "sft" and inference["tags"][s.END_REASON] == "completed"
    assert int(inference["tags"][s.TEXT_LENGTH]) > 10
    server = next(sp for sp in spans if sp["id"] == inference["parentId"])
    assert server["kind"] == "SERVER" and server["traceId"] == sent["ok"]  # the client's trace
    assert canary not in json.dumps(raw, ensure_ascii=False)

    raw, spans = read_trace(query_url, sent["too long"],
                            lambda sp: not check_synthesis(sp, "sft", False))
    assert check_synthesis(spans, "sft", False) == []
    inference = next(sp for sp in spans if sp["name"] == s.INFERENCE)
    assert inference["tags"].get("otel.status_code") == "ERROR"
    assert inference["tags"][s.ERROR_TYPE] == "text_too_long"
    assert inference["tags"].get("error") == "true"  # what Jaeger's UI marks red
    assert canary not in json.dumps(raw, ensure_ascii=False)
