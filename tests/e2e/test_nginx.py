"""Debian's nginx in front of a traced app, injecting B3 (`cosyvoice-traced nginx-config`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from cosyvoice_otel.tools import nginx
from cosyvoice_otel.tools.checks import check_synthesis

from ..support.helpers import (
    BIN,
    ROOT,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    unavailable,
    wait_for_port,
)

pytestmark = pytest.mark.zipkin
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
LOG_LINE = re.compile(r"trace_id=(\S+) span_id=(\S+) sampled=(\S+)")


@pytest.fixture
def proxied_app(zipkin, launch_app, tmp_path):
    if NGINX is None:
        unavailable("nginx is not installed (.ci/setup installs Debian's nginx)", "nginx is not installed")
    app_port, proxy_port = free_port(), free_port()
    launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint,
                "--service-name", "behind-nginx", "--", "python", "tests/support/apps/hello_fastapi.py",
                "--port", str(app_port)], app_env(), app_port)
    log = tmp_path / "access.log"
    proc = start_nginx(tmp_path, [f"127.0.0.1:{app_port}"], proxy_port, log)
    try:
        yield f"http://127.0.0.1:{proxy_port}", log
    finally:
        proc.terminate()
        proc.wait(20)


def start_nginx(tmp_path: Path, upstreams: list[str], port: int,
                log: Path) -> subprocess.Popen:
    """Debian's nginx on ``port`` with the ``nginx-config`` blocks for ``upstreams`` (several:
    one upstream block), everything under ``tmp_path``; returns once it listens."""
    (tmp_path / "b3.conf").write_text(nginx.render(upstreams, f"127.0.0.1:{port}", str(log)))
    (tmp_path / "nginx.conf").write_text(
        f"worker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events { worker_connections 64; }\n"
        # bodies in memory: nginx's workers (nobody, under root) cannot write a temp file into
        # the test's private folder (an upload would fail with 500)
        f"http {{ include b3.conf; client_body_temp_path {tmp_path}/body; "
        f"client_body_buffer_size 16m; proxy_temp_path {tmp_path}/proxy; }}\n")
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=20)
    except Exception:
        proc.terminate()
        proc.wait(20)
        raise
    return proc


def send(url: str, log: Path, headers: dict[str, str]) -> tuple[str, str, str]:
    before = log.read_text().count("\n") if log.exists() else 0
    resp = requests.get(f"{url}/synthesize/alice", headers=headers, timeout=10)
    assert resp.status_code == 200
    for _ in range(50):  # nginx writes the line after the response
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) > before:
            break
        time.sleep(0.05)
    match = LOG_LINE.search(lines[before])
    assert match, lines[before]
    assert resp.headers["X-Trace-Id"] == match.group(1)
    return match.group(1), match.group(2), match.group(3)


def server_span(zipkin, trace_id: str) -> dict:
    spans = zipkin.client().wait_for_trace(trace_id, lambda sp: any(
        s.get("kind") == "SERVER" for s in sp), timeout=20)
    servers = [s for s in spans if s.get("kind") == "SERVER"]
    assert len(servers) == 1, spans
    return servers[0]


def test_without_incoming_context_the_logged_ids_are_the_apps_parent(zipkin, proxied_app) -> None:
    url, log = proxied_app
    trace_id, span_id, sampled = send(url, log, {})
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and re.fullmatch(r"[0-9a-f]{16}", span_id)
    assert sampled == "1"
    span = server_span(zipkin, trace_id)
    assert span["traceId"] == trace_id
    assert span["parentId"] == span_id  # the id nginx logged, 16 hex: accepted by the app


@pytest.mark.parametrize("fmt", ["b3multi128", "b3multi64", "b3single", "w3c"])
def test_a_valid_incoming_trace_id_survives_the_proxy(zipkin, proxied_app, fmt) -> None:
    url, log = proxied_app
    trace_id = new_trace_id(64 if fmt == "b3multi64" else 128)
    headers = {
        "b3multi128": {"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(),
                       "X-B3-Sampled": "1"},
        "b3multi64": {"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id()},
        "b3single": {"b3": f"{trace_id}-{new_span_id()}-1"},
        "w3c": {"traceparent": f"00-{trace_id}-{new_span_id()}-01"},
    }[fmt]
    logged, span_id, _ = send(url, log, headers)
    assert logged == trace_id
    span = server_span(zipkin, trace_id)
    assert span["parentId"] == span_id


@pytest.mark.parametrize("garbage", ["not-a-trace-id", "ABCDEF0123456789ABCDEF0123456789",
                                     "0123456789abcdef0123", "x" * 5000])
def test_garbage_is_replaced_by_a_valid_id(zipkin, proxied_app, garbage) -> None:
    url, log = proxied_app
    trace_id, span_id, _ = send(url, log, {"X-B3-TraceId": garbage, "X-B3-SpanId": garbage[:16]})
    assert trace_id != garbage and re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert server_span(zipkin, trace_id)["parentId"] == span_id


def test_an_incoming_not_sampled_decision_is_kept(zipkin, proxied_app) -> None:
    url, log = proxied_app
    dropped = new_trace_id()
    _, _, sampled = send(url, log, {"X-B3-TraceId": dropped, "X-B3-SpanId": new_span_id(),
                                    "X-B3-Sampled": "0"})
    assert sampled == "0"
    kept, _, _ = send(url, log, {})
    server_span(zipkin, kept)  # flushed after the dropped one
    assert zipkin.client().trace(dropped) == []


def test_examples_config_is_the_generated_one() -> None:
    shipped = (ROOT / "examples" / "nginx" / "cosyvoice-b3.conf").read_text()
    assert shipped == nginx.render("127.0.0.1:8000", "0.0.0.0:8080")


def test_replicas_become_one_upstream_block() -> None:
    one = nginx.render("127.0.0.1:8000", "0.0.0.0:8080")
    assert "upstream " not in one and "proxy_pass http://127.0.0.1:8000;" in one
    assert one.count("location ") == 1
    two = nginx.render(["10.0.0.1:8000", "10.0.0.2:8000"], "0.0.0.0:8080")
    servers = "    server 10.0.0.1:8000;\n    server 10.0.0.2:8000;\n}\n"
    assert "upstream cosyvoice_replicas {\n" + servers in two  # round robin
    assert "upstream cosyvoice_sessions {\n    hash $remote_addr consistent;\n" + servers in two
    gradio, rest = two.split("    location / {")
    assert "location /gradio_api/ {\n        proxy_pass http://cosyvoice_sessions;" in gradio
    assert rest.startswith("\n        proxy_pass http://cosyvoice_replicas;")
    # each location carries the same B3 headers and streaming settings as the single config
    body = one[one.index("    location / {") + len("    location / {"):].replace(
        "127.0.0.1:8000", "cosyvoice_replicas")
    assert rest == body
    assert gradio[gradio.index("location /gradio_api/ {") + len("location /gradio_api/ {"):
                  ].rstrip().rstrip("}").replace("cosyvoice_sessions", "cosyvoice_replicas"
                                                 ) == body.rstrip().rstrip("}").rstrip().rstrip("}")
    with pytest.raises(ValueError, match="--upstream must be HOST:PORT"):
        nginx.render(["10.0.0.1:8000", "nope"])
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "nginx-config", "--upstream", "a:1",
                          "--upstream", "b:2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "    server a:1;\n    server b:2;\n" in out.stdout
    bad = subprocess.run([str(BIN / "cosyvoice-traced"), "nginx-config", "--upstream", "a:1",
                          "--upstream", "b"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--upstream must be HOST:PORT" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_two_gradio_replicas_behind_the_generated_config_serve_every_request(
        zipkin, launch_app, make_model, prompt_file, tmp_path) -> None:
    """Gradio's queue lives in a replica's memory: the join and its data stream (and an
    upload before them) must reach the same replica. Round robin fails every request (join on
    one, data on the other); the generated config hashes /gradio_api/ by client."""
    from .test_gradio import read_complete, request, start_webui

    if NGINX is None:
        unavailable("nginx is not installed (.ci/setup installs Debian's nginx)",
                    "nginx is not installed")
    model = make_model(3)
    replicas = [start_webui(launch_app, zipkin, model, "gradio6", service="replica")[0]
                for _ in range(2)]
    proxy_port = free_port()
    log = tmp_path / "access.log"
    proc = start_nginx(tmp_path, [app.url.split("//", 1)[1] for app in replicas], proxy_port,
                       log)
    sent = []
    try:
        for mode, path in (("sft", "join"), ("zero_shot", "join"), ("sft", "call"),
                           ("sft", "join")):
            trace_id = new_trace_id()
            output = request(f"http://127.0.0.1:{proxy_port}", path, mode, False, prompt_file,
                             trace_id)
            assert output and output[0], f"{mode} via {path}: no audio"
            sent.append((trace_id, mode))
    finally:
        proc.terminate()
        proc.wait(20)
    for trace_id, mode in sent:
        spans = read_complete(zipkin, trace_id, mode, False)
        assert check_synthesis(spans, mode, False) == [], mode
    logged = log.read_text()
    assert "/gradio_api/queue/data " in logged and "session_hash" not in logged  # no query
