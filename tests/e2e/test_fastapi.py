"""The FastAPI runtime-server path: a sync generator in a StreamingResponse, into real Zipkin."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from cosyvoice_otel import schema
from cosyvoice_otel.tools.checks import check_synthesis

from ..support.helpers import BIN, app_env, free_port, new_span_id, new_trace_id, run_parallel

pytestmark = pytest.mark.zipkin
TEXT = "The runtime server streams raw PCM. 第二句。"


# the modes each CosyVoice version's API serves (upstream: instruct is v1 only, instruct2 v2/v3)
VERSION_MODES = {1: ("sft", "zero_shot", "cross_lingual", "instruct", "vc"),
                 3: ("sft", "zero_shot", "cross_lingual", "instruct2", "vc")}


def start_server(zipkin, launch_app, model: Path):
    port = free_port()
    return launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint,
                       "--service-name", "runtime-server", "--", "python", "examples/server.py",
                       "--port", str(port), "--model_dir", str(model)], app_env(), port)


@pytest.fixture
def server(zipkin, launch_app, make_model):
    return start_server(zipkin, launch_app, make_model(3))


def b3(trace_id: str) -> dict[str, str]:
    return {"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(), "X-B3-Sampled": "1"}


def call(url: str, mode: str, stream: bool, prompt: Path, trace_id: str) -> bytes:
    form = {"tts_text": TEXT, "stream_mode": str(stream).lower()}
    files = {}
    if mode == "sft":
        resp = requests.get(f"{url}/inference_sft", params={**form, "spk_id": "中文女"},
                            headers=b3(trace_id), timeout=60)
        return resp.content
    if mode == "instruct":
        form.update(spk_id="中文男", instruct_text="speak slowly")
    if mode == "instruct2":
        form["instruct_text"] = "speak slowly"
    if mode == "zero_shot":
        form["prompt_text"] = "prompt words"
    if mode in ("zero_shot", "cross_lingual", "instruct2"):
        files = {"prompt_wav": prompt.read_bytes()}
    if mode == "vc":
        form.pop("tts_text")
        files = {"source_wav": prompt.read_bytes(), "prompt_wav": prompt.read_bytes()}
    resp = requests.post(f"{url}/inference_{mode}", data=form, files=files, headers=b3(trace_id),
                         timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.content


@pytest.mark.parametrize(("version", "stream"), [(1, False), (3, False), (3, True)])
def test_every_mode_streams_audio_in_one_complete_trace(zipkin, launch_app, make_model,
                                                        prompt_file, version, stream) -> None:
    server = start_server(zipkin, launch_app, make_model(version))
    sent = []
    for mode in VERSION_MODES[version]:
        trace_id = new_trace_id()
        body = call(server.url, mode, stream, prompt_file, trace_id)
        assert len(body) > 2000 and len(body) % 2 == 0  # int16 PCM
        sent.append((trace_id, mode))
    client = zipkin.client()
    for trace_id, mode in sent:
        spans = client.wait_for_trace(trace_id, lambda sp, m=mode: not check_synthesis(
            sp, m, stream), timeout=30)
        assert check_synthesis(spans, mode, stream) == [], mode
        inference = next(s for s in spans if s["name"] == schema.INFERENCE)
        parent = next(s for s in spans if s["id"] == inference["parentId"])
        assert parent["kind"] == "SERVER" and parent["name"].endswith(f"/inference_{mode}")


def test_concurrent_streams_do_not_mix(zipkin, server, prompt_file) -> None:
    ids = [new_trace_id() for _ in range(4)]
    run_parallel([lambda t=t: call(server.url, "sft", True, prompt_file, t) for t in ids],
                 timeout=60)
    seen: set[str] = set()
    for trace_id in ids:
        spans = zipkin.client().wait_for_trace(
            trace_id, lambda sp: not check_synthesis(sp, "sft", True), timeout=30)
        assert check_synthesis(spans, "sft", True) == []
        assert not {s["id"] for s in spans} & seen
        seen |= {s["id"] for s in spans}
