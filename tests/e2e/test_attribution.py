"""Why a request was slow, on real demo requests read back from the real Zipkin: concurrency,
warm-up, how it ended, the model's configuration, GenAI conventions; and the report's
--compare and --by concurrency on two demo servers with different --service-version."""

from __future__ import annotations

import json
import os
import secrets
import subprocess

import pytest
import requests

from cosyvoice_otel import schema
from cosyvoice_otel.tools.checks import check_synthesis
from cosyvoice_otel.tools.gradio_rest import GradioRest

from ..support.helpers import BIN, ROOT, app_env, free_port, new_span_id, new_trace_id, run_parallel

pytestmark = pytest.mark.zipkin
LONG = " ".join(f"Sentence number {i} of a long request." for i in range(12))


def b3(trace_id: str) -> dict[str, str]:
    return {"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(), "X-B3-Sampled": "1"}


def start(zipkin, launch_app, model, program: str, service: str, version: str):
    port = free_port()
    return launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint,
                       "--service-name", service, "--service-version", version, "--",
                       "python", f"examples/{program}.py", "--port", str(port), "--model_dir",
                       str(model)], app_env(GRADIO_ANALYTICS_ENABLED="False"), port)


def sft(url: str, trace_id: str, text: str = "A short request. 第二句。",
        stream: bool = False) -> bytes:
    resp = requests.get(f"{url}/inference_sft", params={"tts_text": text, "spk_id": "中文女",
                                                        "stream_mode": str(stream).lower()},
                        headers=b3(trace_id), timeout=120)
    assert resp.status_code == 200
    return resp.content


def inference_tags(zipkin, trace_id: str, ready=None) -> dict:
    spans = zipkin.client().wait_for_trace(trace_id, ready or (lambda sp: any(
        s["name"] == schema.INFERENCE for s in sp)), timeout=60)
    return next(s for s in spans if s["name"] == schema.INFERENCE)["tags"]


def test_fastapi_requests_carry_attribution(zipkin, launch_app, make_model) -> None:
    model = make_model(3)
    server = start(zipkin, launch_app, model, "server", f"attr-{secrets.token_hex(3)}", "1.0")
    ids = [new_trace_id() for _ in range(3)]
    sft(server.url, ids[0])
    sft(server.url, ids[1])
    sft(server.url, ids[2], stream=True)
    tags = [inference_tags(zipkin, t, lambda sp: not check_synthesis(sp, "sft")) for t in ids]
    # the first request of the process per (mode, stream) is the only warm-up
    assert [t[schema.WARMUP] for t in tags] == ["true", "false", "true"]
    first = tags[0]
    assert first[schema.END_REASON] == "completed" and first[schema.INFLIGHT] == "1"
    assert (first[schema.GENAI_OPERATION], first[schema.GENAI_PROVIDER],
            first[schema.GENAI_OUTPUT_TYPE], first[schema.GENAI_VOICE]) == (
        "text_to_speech", "cosyvoice", "speech", "中文女")
    assert first[schema.GENAI_MODEL] == os.path.basename(str(model))
    assert int(first[schema.GENAI_INPUT_TOKENS]) > 0 and int(first[schema.GENAI_OUTPUT_TOKENS]) > 0
    assert (first[schema.MODEL_VERSION], first[schema.FP16], first[schema.LOAD_TRT],
            first[schema.DEVICE]) == ("3", "false", "false", "cpu")
    assert len(first[schema.CONFIG_HASH]) == 12 and float(first[schema.LLM_FIRST_TOKEN_MS]) > 0

    # concurrent requests see each other
    together = [new_trace_id() for _ in range(4)]
    run_parallel([lambda t=t: sft(server.url, t, LONG) for t in together], timeout=120)
    levels = [int(inference_tags(zipkin, t)[schema.INFLIGHT]) for t in together]
    assert max(levels) >= 2, levels

    # a client that goes away mid-stream: the request says interrupted
    gone = new_trace_id()
    with requests.get(f"{server.url}/inference_sft", params={
            "tts_text": LONG * 2, "spk_id": "中文女", "stream_mode": "true"},
            headers=b3(gone), stream=True, timeout=120) as resp:
        next(resp.iter_content(4096))
    tags = inference_tags(zipkin, gone, lambda sp: any(
        s["name"] == schema.INFERENCE for s in sp))
    assert tags[schema.END_REASON] == "interrupted"
    assert tags[schema.ABANDONED] == "true"


def test_gradio_stream_abandoned_by_its_client_says_interrupted(zipkin, launch_app,
                                                                 make_model) -> None:
    webui = start(zipkin, launch_app, make_model(3), "webui", f"attr-ui-{secrets.token_hex(3)}",
                  "1.0")
    trace_id = new_trace_id()
    client = GradioRest(webui.url, headers=b3(trace_id))
    session = secrets.token_hex(6)
    client._json("POST", "/gradio_api/queue/join", {
        "data": [LONG * 3, "pretrained voice", "中文女", "", None, None, "", 0, True, 1.0],
        "fn_index": client.fn_index("generate_audio"), "session_hash": session,
        "event_data": None, "trigger_id": None})
    with client._request("GET", f"/gradio_api/queue/data?session_hash={session}") as resp:
        for raw in resp:  # leave at the first audio chunk, as a closed browser tab does
            if b"process_generating" in raw:
                break
    tags = inference_tags(zipkin, trace_id)
    assert tags[schema.END_REASON] == "interrupted"


def test_report_compare_and_by_concurrency_on_two_demo_servers(zipkin, launch_app,
                                                                make_model) -> None:
    service = f"versions-{secrets.token_hex(3)}"
    model = make_model(3)
    servers = {v: start(zipkin, launch_app, model, "server", service, v) for v in ("1.0", "1.1")}
    ids = []
    for server in servers.values():
        for _ in range(6):
            ids.append(new_trace_id())
            sft(server.url, ids[-1])
        run_parallel([lambda s=server: sft(s.url, new_trace_id()) for _ in range(3)])
    for trace_id in ids:
        inference_tags(zipkin, trace_id, lambda sp: not check_synthesis(sp, "sft"))
    base = [str(BIN / "cosyvoice-traced"), "report", "--zipkin", zipkin.base_url, "--service",
            service]
    compare = subprocess.run([*base, "--compare", "service.version=1.0", "--compare",
                              "service.version=1.1", "--json"], capture_output=True, text=True,
                             timeout=120, env=app_env(), cwd=ROOT)
    assert compare.returncode == 0, compare.stderr
    data = json.loads(compare.stdout)
    for stage in (schema.INFERENCE, schema.ACOUSTIC_MODEL, schema.FLOW, schema.VOCODER):
        both = data["stages"][stage]
        assert both["a"]["count"] > 0 and both["b"]["count"] > 0, stage
        assert both["verdict"] in ("faster", "slower", "no significant change")
    by = subprocess.run([*base, "--by", "concurrency", "--json"], capture_output=True,
                        text=True, timeout=120, env=app_env(), cwd=ROOT)
    groups = json.loads(by.stdout)
    assert "1" in groups and set(groups) <= {"1", "2", "3-4", "5-8", "9+"}
    assert sum(g["warmup_excluded"] for g in groups.values()) == 2  # one per process
