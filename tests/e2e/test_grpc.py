"""The gRPC runtime-server path: a server-streaming RPC on the demo engine, into real Zipkin.

The server (examples/grpc_server.py, upstream's runtime/python/grpc shape) runs UNMODIFIED under
``cosyvoice-traced run``; the gRPC server instrumentation reads the client's trace context from
the call's metadata (B3 single, B3 multi or W3C), and the synthesis stages must sit inside the
RPC's server span.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import pytest

from cosyvoice_otel import schema
from cosyvoice_otel.tools.checks import check_synthesis
from cosyvoice_otel.tools.verify import grpc_request

from ..support.helpers import (
    BIN,
    ROOT,
    app_env,
    context_headers,
    free_port,
    new_span_id,
    new_trace_id,
    run_parallel,
)

sys.path.insert(0, str(ROOT / "examples" / "grpc_proto"))
import build_proto  # noqa: E402

build_proto.ensure()
import cosyvoice_pb2  # noqa: E402
import cosyvoice_pb2_grpc  # noqa: E402
import grpc  # noqa: E402

TEXT = "The gRPC server streams int16 PCM. 第二句。"
METHOD = "/cosyvoice.CosyVoice/Inference"


def metadata(fmt: str, trace_id: str, span_id: str) -> list[tuple[str, str]]:
    """The same context as HTTP headers, as gRPC metadata (keys lower-case)."""
    return [(key.lower(), value) for key, value in
            context_headers(fmt, trace_id, span_id).items()]


def pcm(prompt: Path) -> bytes:
    with wave.open(str(prompt), "rb") as wav:
        return wav.readframes(wav.getnframes())


def request(mode: str, prompt: Path) -> cosyvoice_pb2.Request:
    if mode == "sft":
        return cosyvoice_pb2.Request(sft_request=cosyvoice_pb2.sftRequest(
            spk_id="中文女", tts_text=TEXT))
    if mode == "zero_shot":
        return cosyvoice_pb2.Request(zero_shot_request=cosyvoice_pb2.zeroshotRequest(
            tts_text=TEXT, prompt_text="prompt words", prompt_audio=pcm(prompt)))
    return cosyvoice_pb2.Request(cross_lingual_request=cosyvoice_pb2.crosslingualRequest(
        tts_text=TEXT, prompt_audio=pcm(prompt)))


@pytest.mark.parametrize(("mode", "text"), [("sft", "short"), ("sft", "长" * 300),
                                            ("zero_shot", "x" * 200)])
def test_verify_encodes_requests_exactly_as_the_generated_stubs(mode, text) -> None:
    audio = bytes(range(256)) * 200  # a prompt over 16 KiB: a three-byte length
    if mode == "sft":
        expected = cosyvoice_pb2.Request(sft_request=cosyvoice_pb2.sftRequest(
            spk_id="中文女", tts_text=text))
    else:
        expected = cosyvoice_pb2.Request(zero_shot_request=cosyvoice_pb2.zeroshotRequest(
            tts_text=text, prompt_text="prompt words", prompt_audio=audio))
    assert grpc_request(mode, text, audio) == expected.SerializeToString()


@pytest.fixture(scope="module")
def v3_model(make_model) -> Path:
    return make_model(3)


@pytest.fixture
def grpc_app(zipkin, launch_app, v3_model):
    port = free_port()
    return launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint,
                       "--service-name", "grpc-server", "--", "python", "examples/grpc_server.py",
                       "--port", str(port), "--model_dir", str(v3_model)], app_env(), port)


TRAILING: dict[str, str] = {}  # the last call's trailing metadata


def call(port: int, mode: str, prompt: Path, fmt: str, trace_id: str,
         span_id: str) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = cosyvoice_pb2_grpc.CosyVoiceStub(channel)
        chunks = stub.Inference(request(mode, prompt), metadata=metadata(fmt, trace_id, span_id),
                                timeout=60)
        audio = b"".join(chunk.tts_audio for chunk in chunks)
        TRAILING[trace_id] = dict(chunks.trailing_metadata() or ())
        return audio


@pytest.mark.zipkin
def test_each_metadata_format_keeps_the_client_trace_with_stages_inside_the_rpc(
        zipkin, grpc_app, prompt_file) -> None:
    sent = []
    for fmt, mode in (("b3single", "sft"), ("b3multi", "zero_shot"), ("w3c", "cross_lingual")):
        trace_id, span_id = new_trace_id(), new_span_id()
        audio = call(grpc_app.port, mode, prompt_file, fmt, trace_id, span_id)
        assert len(audio) > 2000 and len(audio) % 2 == 0
        sent.append((fmt, mode, trace_id, span_id))
    client = zipkin.client()
    for fmt, mode, trace_id, span_id in sent:
        spans = client.wait_for_trace(trace_id, lambda sp, m=mode: not check_synthesis(
            sp, m, False), timeout=30)
        assert check_synthesis(spans, mode, False) == [], (fmt, mode)
        server = next(s for s in spans if s.get("kind") == "SERVER")
        assert server["name"].lower() == METHOD.lower()
        assert server["parentId"] == span_id, fmt  # the client's span is the parent
        # the caller got its trace back: traceresponse in the call's trailing metadata
        assert TRAILING[trace_id]["traceresponse"] == f"00-{trace_id}-{server['id']}-01", fmt
        assert server["tags"]["rpc.system"] == "grpc"
        inference = next(s for s in spans if s["name"] == schema.INFERENCE)
        assert inference["parentId"] == server["id"]
        assert inference["tags"][schema.MODE] == mode
        # two sentences, one message each as it comes: the listener's playback figures, and
        # the first chunk's parts adding up from the RPC's start
        tags = inference["tags"]
        assert int(tags[schema.CHUNK_COUNT]) == 2 and tags[schema.PLAYBACK_STALLS] == "0"
        parts = sum(float(tags[schema.FIRST_CHUNK_PARTS[p]]) for p in schema.PARTS)
        assert parts == pytest.approx(float(tags[schema.FIRST_CHUNK_REQUEST_MS]), abs=1.0)
        assert (float(tags[schema.FIRST_CHUNK_PARTS["prompt_audio"]]) > 0) is (mode != "sft")
        for span in spans:  # every stage inside the RPC's time
            if span is not server:
                assert span["timestamp"] >= server["timestamp"] - 1000
                assert span["timestamp"] + span.get("duration", 0) <= \
                    server["timestamp"] + server["duration"] + 1000


@pytest.mark.zipkin
def test_concurrent_rpcs_stay_in_their_own_traces(zipkin, grpc_app, prompt_file) -> None:
    ids = [(new_trace_id(), new_span_id()) for _ in range(3)]
    run_parallel([lambda t=t, s=s: call(grpc_app.port, "sft", prompt_file, "b3multi", t, s)
                  for t, s in ids], timeout=90)
    seen: set[str] = set()
    for trace_id, _ in ids:
        spans = zipkin.client().wait_for_trace(
            trace_id, lambda sp: not check_synthesis(sp, "sft", False), timeout=30)
        assert check_synthesis(spans, "sft", False) == []
        assert not {s["id"] for s in spans} & seen
        seen |= {s["id"] for s in spans}


@pytest.mark.zipkin
def test_verify_grpc_passes_against_the_traced_grpc_server(zipkin, grpc_app) -> None:
    result = subprocess.run([str(BIN / "cosyvoice-traced"), "verify", "--grpc",
                             f"127.0.0.1:{grpc_app.port}", "--zipkin", zipkin.base_url,
                             "--json"], capture_output=True, text=True, timeout=180,
                            env=app_env(), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    import json

    report = json.loads(result.stdout)
    assert report["app"] == "grpc" and report["ok"]
    names = [c["name"] for c in report["checks"]]
    assert sum("client trace id kept" in n for n in names) == 4  # three formats + the bad one
    assert any("bad input" in n and "error tag" in n for n in names)


def test_verify_grpc_bad_arguments_are_one_line(refused_endpoint) -> None:
    base = refused_endpoint.rsplit("/api", 1)[0]
    for args, code, words in (
            (["--grpc", "nonsense", "--zipkin", base], 2, "--grpc"),
            (["--zipkin", base], 2, "exactly one of --app"),
            (["--grpc", "127.0.0.1:1", "--app", "http://x", "--zipkin", base], 2,
             "exactly one of --app")):
        result = subprocess.run([str(BIN / "cosyvoice-traced"), "verify", *args],
                                capture_output=True, text=True, timeout=60, env=app_env())
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr


@pytest.mark.zipkin
def test_verify_grpc_without_a_server_is_one_clear_line(zipkin) -> None:
    port = free_port()
    result = subprocess.run([str(BIN / "cosyvoice-traced"), "verify", "--grpc",
                             f"127.0.0.1:{port}", "--zipkin", zipkin.base_url],
                            capture_output=True, text=True, timeout=60, env=app_env())
    assert result.returncode == 1
    assert f"no gRPC server answers at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
