"""What `verify` sends, read by a scripted app (issue 31: the e2e tests only see that a real
app answered): the webui's generate_audio inputs in their order, the prompt uploaded first,
the trace headers of the format chosen, the FastAPI form fields, and the files verify wrote
for the uploads removed afterwards."""

from __future__ import annotations

import email.parser
import json

import pytest

from cosyvoice_otel.tools import verify
from cosyvoice_otel.tools.gradio_rest import GradioRest

from ..support.loopback_server import LoopbackServer, QuietHandler

TRACE = "c" * 32


def form(headers, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body as {name: (filename, bytes)}."""
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"):
            (part.get_filename(), part.get_payload(decode=True))
            for part in message.get_payload()}


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict, bytes]] = []


@pytest.fixture
def webui():
    seen = Recorder()

    class App(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server interface
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.requests.append(("POST", self.path, self.headers, body))
            if self.path == "/gradio_api/upload":
                self.reply(200, json.dumps(["/srv/tmp/prompt.wav"]).encode(), "application/json")
            else:
                self.reply(200, b"{}", "application/json")

        def do_GET(self) -> None:  # noqa: N802
            seen.requests.append(("GET", self.path, self.headers, b""))
            if self.path == "/config":
                config = {"dependencies": [{"api_name": "generate_audio", "id": 3}]}
                self.reply(200, json.dumps(config).encode(), "application/json")
            else:
                done = {"msg": "process_completed", "success": True, "output": {"data": ["o"]}}
                self.reply(200, f"data: {json.dumps(done)}\n".encode(), "text/event-stream")

    server = LoopbackServer(App, "")
    server.seen = seen
    yield server
    server.close()


def config(speaker: str) -> dict:
    props = [{}, {"choices": [["预训练音色", "预训练音色"], ["3s极速复刻", "3s极速复刻"]]},
             {"choices": [[speaker, speaker]]}]
    return {"dependencies": [{"api_name": "generate_audio", "inputs": [0, 1, 2]}],
            "components": [{"id": i, "props": p} for i, p in enumerate(props)]}


def test_a_zero_shot_request_uploads_its_prompt_then_joins_with_the_webuis_inputs(
        webui, tmp_path) -> None:
    app = verify.GradioApp(webui.endpoint, config("中文女"))
    sent = verify.Sent(TRACE, "b3single", "zero_shot", True, "CANARYZ")
    written: list[bytes] = []

    def tmp(data: bytes) -> str:
        written.append(data)
        path = tmp_path / "p.wav"
        path.write_bytes(data)
        return str(path)

    app.send(sent, b"RIFF-prompt", tmp)
    posts = [(path, headers, body) for method, path, headers, body in webui.seen.requests
             if method == "POST"]
    (upload_path, upload_headers, upload_body), (join_path, join_headers, join_body) = posts
    assert upload_path == "/gradio_api/upload" and written == [b"RIFF-prompt"]
    assert form(upload_headers, upload_body) == {"files": ("p.wav", b"RIFF-prompt")}
    assert join_path == "/gradio_api/queue/join"
    join = json.loads(join_body)
    assert join["fn_index"] == 3
    assert join["data"] == [
        verify.request_text(sent), "3s极速复刻", "中文女",
        verify.PROMPT_TEXT.format(canary="CANARYZ"),
        {"path": "/srv/tmp/prompt.wav", "meta": {"_type": "gradio.FileData"},
         "orig_name": "p.wav"},
        None, "", 0, True, 1.0]
    # every request of this synthesis carries its trace, in the format chosen
    assert all(h["b3"].startswith(f"{TRACE}-") for _, h, _ in posts)


def test_an_sft_request_has_no_prompt_and_the_first_mode(webui) -> None:
    app = verify.GradioApp(webui.endpoint, config("英文男"))
    sent = verify.Sent(TRACE, "traceparent", "sft", False, "CANARYS")
    app.send(sent, None, lambda data: pytest.fail("nothing to upload"))
    (join,) = [json.loads(body) for method, path, _, body in webui.seen.requests
               if path == "/gradio_api/queue/join"]
    assert join["data"][:5] == [verify.request_text(sent), "预训练音色", "英文男", "", None]
    assert join["data"][8] is False


def test_the_gradio_client_upload_returns_the_apps_file_reference(webui, tmp_path) -> None:
    path = tmp_path / "voice.wav"
    path.write_bytes(b"\x00\x01" * 100)
    assert GradioRest(webui.endpoint).upload(path) == {
        "path": "/srv/tmp/prompt.wav", "meta": {"_type": "gradio.FileData"},
        "orig_name": "voice.wav"}
    (_, _, headers, body), = webui.seen.requests
    assert form(headers, body)["files"] == ("voice.wav", b"\x00\x01" * 100)


@pytest.mark.parametrize(("mode", "fields"), [
    ("sft", {"tts_text", "stream_mode", "spk_id"}),
    ("zero_shot", {"tts_text", "stream_mode", "prompt_text", "prompt_wav"}),
])
def test_a_fastapi_request_is_the_runtime_servers_form(webui, mode, fields) -> None:
    app = verify.FastApiApp(webui.endpoint + "/")
    sent = verify.Sent(TRACE, "b3multi", mode, True, "CANARYF")
    app.send(sent, b"RIFF" if mode != "sft" else None, lambda data: "")
    ((method, path, headers, body),) = webui.seen.requests
    assert (method, path) == ("POST", f"/inference_{mode}")
    assert headers["X-B3-TraceId"] == TRACE
    got = form(headers, body)
    assert set(got) == fields
    assert got["tts_text"] == (None, verify.request_text(sent).encode())
    assert got["stream_mode"] == (None, b"true")
    if mode == "sft":
        assert got["spk_id"] == (None, "中文女".encode())
    else:
        assert got["prompt_wav"] == ("prompt.wav", b"RIFF")
        assert got["prompt_text"][1].decode() == verify.PROMPT_TEXT.format(canary="CANARYF")


@pytest.fixture
def zipkin_up():
    class Zipkin(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = {"status": "UP"} if self.path == "/health" else []
            self.reply(200, json.dumps(body).encode(), "application/json")

    server = LoopbackServer(Zipkin, "")
    yield server
    server.close()


def test_verify_removes_the_prompt_files_it_wrote_for_the_uploads(webui, zipkin_up,
                                                                 monkeypatch) -> None:
    import os
    import tempfile

    full = config("中文女")
    full["dependencies"][0]["id"] = 3
    made: list[str] = []
    real = tempfile.NamedTemporaryFile

    def named(*args, **kwargs):
        handle = real(*args, **kwargs)
        made.append(handle.name)
        return handle

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", named)
    monkeypatch.setattr(verify, "detect", lambda url: ("gradio", full))
    report = verify.run_verify(webui.endpoint, zipkin_up.endpoint, requests=3, timeout=0.1)
    uploads = [body for _, path, _, body in webui.seen.requests if path == "/gradio_api/upload"]
    assert len(made) == len(uploads) >= 1  # one file per zero-shot prompt
    assert all(b"RIFF" in body and b"WAVE" in body for body in uploads)  # the prompt itself
    assert not any(os.path.exists(name) for name in made)
    assert report.app_kind == "gradio" and not report.ok  # Zipkin had none of the traces
    # every request sent (three and the bad input) has its own failed check
    assert len([c for c in report.checks if not c.ok]) >= 4


def test_verify_grpc_sends_each_request_unstreamed_to_the_server(zipkin_up) -> None:
    from ..support.grpc_stub import inference_server

    received: list[bytes] = []

    def inference(request: bytes, context):
        received.append(request)
        yield b"pcm"

    with inference_server(inference) as target:
        report = verify.run_verify(None, zipkin_up.endpoint, requests=3, timeout=0.1,
                                   grpc_target=target)
    assert report.app_kind == "grpc" and len(received) == 4  # three and the bad input
    assert not report.ok
