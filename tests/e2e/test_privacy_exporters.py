"""Nothing the user sends leaves the process, whatever the exporter: the canary test for each.

The demo FastAPI server runs under the launcher with each exporter; requests carry canaries in
the text (with a NUL that makes the engine fail with an exception QUOTING the text, quotes,
a backslash, emoji), the prompt text, the upload's file name, an unmatched path, a short
query value, a bare query item and a query key the app does not declare, and a speaker id the
model does not list (the engine's KeyError quotes it). Then the test reads what each exporter
really wrote: Zipkin's API, the spool directory (Zipkin refusing connections), the test's own
OTLP receiver, the Zipkin file, and the app's stdout for the console exporter, and every
message on the Kafka topic.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from ..support.helpers import BIN, app_env, free_port
from ..support.leaks import found, otlp_dicts, strings
from ..support.otlp_sink import OtlpSink

TRACED = str(BIN / "cosyvoice-traced")
EXPORTERS = ["zipkin", "spool", "otlp", "zipkin-file", "console",
             pytest.param("kafka", marks=pytest.mark.xdist_group("kafka"))]


def kafka_messages(bootstrap: str, topic: str) -> list:
    """Every message on the topic, decoded (each a Zipkin JSON v2 list)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"leak-{secrets.token_hex(4)}",
                         "auto.offset.reset": "earliest", "log_level": 0})
    consumer.subscribe([topic])
    out, quiet_until = [], time.monotonic() + 10
    try:
        while time.monotonic() < quiet_until:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(json.loads(msg.value()))
            quiet_until = time.monotonic() + 3  # until three quiet seconds
    finally:
        consumer.close()
    return out


def console_spans(output: str) -> list[dict]:
    """The ConsoleSpanExporter prints each span as indented JSON between '{' and '}' lines."""
    spans, block = [], None
    for line in output.splitlines():
        if line == "{":
            block = [line]
        elif block is not None:
            block.append(line)
            if line == "}":
                spans.append(json.loads("\n".join(block)))
                block = None
    return spans


def send_requests(url: str, prompt_file: Path) -> tuple[list[str], list[str]]:
    """The requests, and (texts that must not leak, short values that must not leak)."""
    token = secrets.token_hex(4).upper()
    failing = f"pin {token[:4]} for \"bob\" \\ 🎉\x00"  # short words, as in the finding
    spoken = f"Speak CANARY{token}B now, 你好"
    prompt = f"prompt 'CANARY{token}C'"
    file_name = f"voice-CANARY{token}D.wav"
    path_canary = f"CANARY{token}E"
    short = f"q{token[:2].lower()}"  # 3 characters: no text masking could catch it
    bare = f"CANARY{token}F"  # a bare query item: a string the client chose
    key = f"CANARY{token}G"  # a query KEY the app does not declare
    speaker = f"CANARY{token}H"  # a speaker the model does not list (its KeyError quotes it)
    try:  # the engine raises on the NUL after the 200 headers went out
        requests.get(f"{url}/inference_sft", params={"tts_text": failing, "spk_id": "中文女"},
                     timeout=60)
    except requests.exceptions.ChunkedEncodingError:
        pass
    resp = requests.get(f"{url}/inference_sft", params={"tts_text": spoken, "spk_id": "中文女"},
                        timeout=60)
    assert resp.status_code == 200 and resp.content
    resp = requests.post(f"{url}/inference_zero_shot", timeout=60,
                         data={"tts_text": spoken, "prompt_text": prompt},
                         files={"prompt_wav": (file_name, prompt_file.read_bytes())})
    assert resp.status_code == 200
    resp = requests.get(f"{url}/no/such/{path_canary}/x", params={"token": short}, timeout=10)
    assert resp.status_code == 404
    resp = requests.get(f"{url}/inference_sft?tts_text=hello%20there&spk_id=%E4%B8%AD%E6%96%87"
                        f"%E5%A5%B3&{bare}&{key}=1", timeout=60)
    assert resp.status_code == 200
    try:
        requests.get(f"{url}/inference_sft", params={"tts_text": "hello", "spk_id": speaker},
                     timeout=60)
    except requests.exceptions.ChunkedEncodingError:
        pass
    return [failing, spoken, prompt, file_name, path_canary, bare, key, speaker], [short]


def written(exporter: str, app, zipkin_client, sink: OtlpSink, tmp_path: Path,
            service: str) -> Any:
    if exporter == "zipkin":
        return zipkin_client.traces(service=service, lookback_ms=600_000, limit=100)
    if exporter == "spool":
        return [json.loads(p.read_bytes()) for p in sorted((tmp_path / "spool").rglob("*.json"))]
    if exporter == "otlp":
        return [otlp_dicts(body) for body in sink.bodies]
    if exporter == "zipkin-file":
        return json.loads((tmp_path / "spans.json").read_text())
    if exporter == "kafka":
        return kafka_messages(app.kafka_bootstrap, service)
    return console_spans(app.output())


@pytest.mark.zipkin
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_no_request_content_in_what_any_exporter_wrote(exporter, request, launch_app,
                                                       make_model, prompt_file, tmp_path,
                                                       refused_endpoint) -> None:
    zipkin = request.getfixturevalue("zipkin") if exporter == "zipkin" else None
    broker = request.getfixturevalue("kafka_broker") if exporter == "kafka" else None
    sink = OtlpSink()
    service = f"leak-{exporter}-{secrets.token_hex(3)}"
    flags = {
        "zipkin": ["--zipkin-endpoint", zipkin.endpoint if zipkin else ""],
        "spool": ["--zipkin-endpoint", refused_endpoint, "--spool-dir", str(tmp_path / "spool")],
        "otlp": ["--exporter", "otlp", "--otlp-endpoint", sink.endpoint],
        "zipkin-file": ["--exporter", "zipkin-file", "--zipkin-file", str(tmp_path / "spans.json")],
        "console": ["--exporter", "console"],
        # the service name doubles as a fresh topic: only this test's messages are read back
        "kafka": ["--exporter", "kafka", "--kafka-topic", service,
                  "--kafka-bootstrap-servers", broker.bootstrap if broker else ""],
    }[exporter]
    port = free_port()
    app = launch_app([TRACED, "run", "--service-name", service, *flags, "--", "python",
                      "examples/server.py", "--port", str(port), "--model_dir",
                      str(make_model(3))], app_env(), port)
    app.kafka_bootstrap = broker.bootstrap if broker else None
    try:
        private, short = send_requests(app.url, prompt_file)
    finally:
        app.stop()  # SIGTERM: the app flushes its spans before it dies
        sink.close()
    client = zipkin.client() if zipkin else None
    deadline = time.monotonic() + 20  # Zipkin stores asynchronously; the others are written
    output = written(exporter, app, client, sink, tmp_path, service)
    while client is not None and len(output) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
        output = written(exporter, app, client, sink, tmp_path, service)
    values = list(strings(output))
    # the test can fail: the spans are there, the failure with its message, the 404
    assert any("cosyvoice.inference" in v for v in values), f"{exporter} wrote no stage span"
    assert any("NUL character" in v for v in values), f"{exporter}: the failure was not traced"
    leaks = {text: found(text, output) for text in private + short}
    assert {t: hits[:2] for t, hits in leaks.items() if hits} == {}
    assert any("/{unmatched}" in v for v in values), f"{exporter}: no placeholder for the 404"
