"""What a trace holds around the synthesis, on real servers into the real Zipkin: no span per
streamed chunk (ASGI http send/receive) unless asked, no trace of Gradio's housekeeping routes
(heartbeat, config, info, assets), and so no orphan spans when a client sends its trace headers
on every call (gradio_client does)."""

from __future__ import annotations

import secrets

import pytest
import requests

from cosyvoice_otel import schema
from cosyvoice_otel.tools.checks import check_synthesis

from ..support.helpers import BIN, app_env, free_port, new_span_id, new_trace_id

pytestmark = pytest.mark.zipkin


def start(zipkin, launch_app, model, program: str, *flags: str):
    port = free_port()
    return launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint,
                       "--service-name", f"noise-{secrets.token_hex(3)}", *flags, "--", "python",
                       f"examples/{program}.py", "--port", str(port), "--model_dir", str(model)],
                      app_env(GRADIO_ANALYTICS_ENABLED="False"), port)


@pytest.mark.parametrize(("flags", "io_spans"), [((), False), (("--http-io-spans",), True)])
def test_streamed_chunks_are_not_spans_unless_asked(zipkin, launch_app, make_model, flags,
                                                    io_spans) -> None:
    server = start(zipkin, launch_app, make_model(3), "server", *flags)
    trace_id = new_trace_id()
    resp = requests.get(f"{server.url}/inference_sft", params={
        "tts_text": "Streamed in chunks. 第二句。", "spk_id": "中文女", "stream_mode": "true"},
        headers={"b3": f"{trace_id}-{new_span_id()}-1"}, timeout=60)
    assert resp.status_code == 200 and len(resp.content) > 2000
    spans = zipkin.client().wait_for_trace(
        trace_id, lambda sp: not check_synthesis(sp, "sft", True), timeout=30)
    assert check_synthesis(spans, "sft", True) == []
    io = [s for s in spans if s["name"].endswith(("http send", "http receive"))]
    assert bool(io) is io_spans, [s["name"] for s in spans]


@pytest.mark.parametrize("flags", [(), ("--excluded-urls", "none")])
def test_gradio_client_sends_headers_everywhere_and_the_trace_has_no_orphans(
        zipkin, launch_app, make_model, flags) -> None:
    from gradio_client import Client

    webui = start(zipkin, launch_app, make_model(3), "webui", *flags)
    trace_id, client_span = new_trace_id(), new_span_id()
    client = Client(webui.url, headers={"b3": f"{trace_id}-{client_span}-1"}, verbose=False,
                    download_files=False)
    client.predict("Through gradio_client. 第二句。", "pretrained voice", "中文女", "", None, None,
                   "", 0, False, 1.0, api_name="/generate_audio")
    client.close()
    spans = zipkin.client().wait_for_trace(
        trace_id, lambda sp: not check_synthesis(sp, "sft", False), timeout=30)
    assert check_synthesis(spans, "sft", False) == []
    assert any(s["name"] == schema.GRADIO_EVENT for s in spans)
    names = " ".join(s["name"] for s in spans)
    if flags:  # everything traced: the housekeeping the default leaves out is there
        assert "/config" in names or "/info" in names or "heartbeat" in names, names
        return
    ids = {s["id"] for s in spans}
    orphans = [s["name"] for s in spans if s.get("parentId") not in ids | {client_span}
               and "parentId" in s]
    assert orphans == []
    for housekeeping in ("heartbeat", "/config", "/info", "/assets"):
        assert housekeeping not in names
