"""The Gradio client the tools use (`demo`, `verify`), against a scripted app (issue 31: its
error lines ran in no test): every way an answer can go wrong is one GradioError naming the
event, never a hang or a KeyError."""

from __future__ import annotations

import json

import pytest

from cosyvoice_otel.tools.gradio_rest import GradioError, GradioRest

from ..support.loopback_server import LoopbackServer, QuietHandler


def gradio(stream: list[str], config: dict | None = None, status: int = 200) -> LoopbackServer:
    """An app whose queue stream (and REST call stream) is ``stream``, line by line."""
    config = config or {"dependencies": [{"api_name": "generate_audio", "id": 7}]}

    class App(QuietHandler):
        def _send(self, body: bytes, kind: str = "application/json") -> None:
            self.reply(status, body, kind)

        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            if self.path == "/config":
                self._send(json.dumps(config).encode())
            else:
                self._send("".join(line + "\n" for line in stream).encode(), "text/event-stream")

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send(json.dumps({"event_id": "e1"}).encode())

    return LoopbackServer(App, "")


def data(message: dict) -> str:
    return "data: " + json.dumps(message)


def test_join_returns_the_completed_output() -> None:
    with gradio([data({"msg": "estimation"}), data(
            {"msg": "process_completed", "success": True, "output": {"data": ["out.wav"]}})]) as app:
        assert GradioRest(app.endpoint).join("generate_audio", []) == ["out.wav"]


@pytest.mark.parametrize(("stream", "says"), [
    ([data({"msg": "estimation"})], "generate_audio: the stream ended without process_completed"),
    ([data({"msg": "process_completed", "success": False, "output": {"error": "boom"}})],
     "generate_audio: app error {'error': 'boom'}"),
])
def test_join_failures_are_one_error_naming_the_event(stream, says) -> None:
    with gradio(stream) as app, pytest.raises(GradioError) as failed:
        GradioRest(app.endpoint).join("generate_audio", [])
    assert str(failed.value) == says


def test_an_event_the_app_does_not_have_is_named() -> None:
    with gradio([]) as app, pytest.raises(GradioError, match="no event with api_name 'other'"):
        GradioRest(app.endpoint).fn_index("other")


def test_the_event_index_is_the_apps_own_id() -> None:
    with gradio([]) as app:
        assert GradioRest(app.endpoint).fn_index("generate_audio") == 7


@pytest.mark.parametrize(("stream", "result", "says"), [
    (["event: generating", 'data: ["part"]', "event: complete", 'data: ["whole"]'], ["whole"], ""),
    (["event: error", 'data: "engine failed"'], None,
     'generate_audio: app error "engine failed"'),
    (["event: generating", 'data: ["part"]'], None,
     "generate_audio: the stream ended without a complete event"),
])
def test_the_rest_call_path(stream, result, says) -> None:
    with gradio(stream) as app:
        client = GradioRest(app.endpoint)
        if says:
            with pytest.raises(GradioError) as failed:
                client.call("generate_audio", [])
            assert str(failed.value) == says
        else:
            assert client.call("generate_audio", []) == result


def test_an_app_that_refuses_is_one_error_naming_the_request() -> None:
    with gradio([], status=503) as app, pytest.raises(GradioError, match=r"^GET /config: HTTP"):
        GradioRest(app.endpoint).fn_index("generate_audio")
