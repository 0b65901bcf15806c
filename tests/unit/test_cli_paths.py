"""The commands' own lines in-process (issue 31: lines the generated mutants found no test
running, the e2e tests being in launched processes that stop before them or never take
them): each bad input one line and exit 2, each tool failure one line and exit 1, what
`verify` prints, `report` with nothing to report."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler

import pytest

from cosyvoice_otel.launcher import cli, launcher
from cosyvoice_otel.tools import demo, verify

from ..support.loopback_server import LoopbackServer, QuietHandler


def one_line_error(capsys, code: int, args: list[str]) -> str:
    try:
        got = cli.main(args)
    except SystemExit as exc:
        got = int(exc.code or 0)
    err = capsys.readouterr().err
    assert got == code, err
    assert err.startswith("cosyvoice-traced: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(("args", "named"), [
    (["demo", "--zipkin-endpoint", "zipkin:9411"], "--zipkin-endpoint"),
    (["doctor", "--metrics", "localhost:9464/metrics"], "--metrics"),
    (["report", "--zipkin", "http://127.0.0.1:9", "--lookback", "soon"], "--lookback"),
])
def test_a_bad_url_or_duration_is_one_line_naming_the_option(capsys, args, named) -> None:
    assert named in one_line_error(capsys, 2, args)


def test_no_opentelemetry_instrument_is_a_usage_error(capsys, monkeypatch) -> None:
    def missing():
        raise launcher.LaunchError("opentelemetry-instrument is not installed here")

    monkeypatch.setattr(launcher, "find_instrument", missing)
    err = one_line_error(capsys, 2, ["run", "--exporter", "none", "--", "python", "-c", "pass"])
    assert "opentelemetry-instrument is not installed here" in err


def test_a_demo_that_fails_is_its_one_line_and_exit_1(capsys, monkeypatch) -> None:
    def fails(*args, **kwargs):
        raise demo.DemoError("the demo app exited with 1")

    monkeypatch.setattr(demo, "run_demo", fails)
    assert one_line_error(capsys, 1, ["demo"]) == ("cosyvoice-traced: error: the demo app "
                                                   "exited with 1\n")


class EmptyZipkin(QuietHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        body = b"[]"
        self.reply(self.status, body, "application/json")


class BrokenZipkin(EmptyZipkin):
    status = 500


def serve(handler: type[BaseHTTPRequestHandler]) -> LoopbackServer:
    return LoopbackServer(handler, "")


def test_report_with_no_traces_says_so_and_exits_1(capsys) -> None:
    with serve(EmptyZipkin) as zipkin:
        err = one_line_error(capsys, 1, ["report", "--zipkin", zipkin.endpoint, "--service",
                                         "voice", "--lookback", "15m"])
    assert err == "cosyvoice-traced: error: no synthesis traces of service 'voice' in the last 15m\n"


def test_report_when_zipkin_fails_is_one_line_and_exit_1(capsys) -> None:
    with serve(BrokenZipkin) as zipkin:
        err = one_line_error(capsys, 1, ["report", "--zipkin", zipkin.endpoint])
    assert "500" in err


def fake_verify(monkeypatch, checks: list[verify.Check], seen: dict):
    def run(app_url, zipkin_url, count, progress, timeout, grpc_target):
        seen["bar"] = progress([1, 2, 3])
        seen["args"] = (app_url, zipkin_url, count, timeout, grpc_target)
        return verify.Report("fastapi", checks)

    monkeypatch.setattr(verify, "run_verify", run)


def test_verify_prints_each_check_and_fails_when_one_does(capsys, monkeypatch) -> None:
    seen: dict = {}
    fake_verify(monkeypatch, [verify.Check("trace arrived", True),
                              verify.Check("no request text stored", False, "found in a tag")],
                seen)
    with pytest.raises(SystemExit) as done:
        cli.main(["verify", "--app", "http://127.0.0.1:8000", "--zipkin", "http://127.0.0.1:9411",
                  "--requests", "5"])
    assert done.value.code == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == ["PASS  trace arrived",
                                "FAIL  no request text stored  found in a tag",
                                "1 passed, 1 failed (fastapi app)"]
    assert "waiting for traces in Zipkin" in err  # the progress bar, on stderr
    assert seen["bar"] is not None and seen["args"][2] == 5


def test_verify_json_is_one_document_and_exit_0_when_all_pass(capsys, monkeypatch) -> None:
    seen: dict = {}
    fake_verify(monkeypatch, [verify.Check("trace arrived", True)], seen)
    with pytest.raises(SystemExit) as done:
        cli.main(["verify", "--app", "http://127.0.0.1:8000", "--zipkin", "http://127.0.0.1:9411",
                  "--json"])
    assert done.value.code == 0 and seen["bar"] is None  # no bar in a machine's output
    out, err = capsys.readouterr()
    assert json.loads(out) == {"ok": True, "app": "fastapi", "checks": [
        {"name": "trace arrived", "ok": True, "reason": ""}]}
    assert err == ""


# -- verify against stand-ins: what it cannot run at all, and the app failing every request

class Stand(QuietHandler):
    """One loopback server standing for the app and for Zipkin: the app's documents as given,
    every synthesis request failed (500), Zipkin healthy and knowing no trace."""

    documents: dict[str, object] = {}
    zipkin_up = True

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.reply(status, data, "application/json")

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        if self.path == "/health":
            self._json(200 if self.zipkin_up else 503, {"status": "UP" if self.zipkin_up
                                                        else "DOWN"})
        elif self.path in self.documents:
            self._json(200, self.documents[self.path])
        else:
            self._json(404, {})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._json(500, {"detail": "engine failed"})


def stand(documents: dict[str, object], zipkin_up: bool = True) -> LoopbackServer:
    handler = type("Handler", (Stand,), {"documents": documents, "zipkin_up": zipkin_up})
    return LoopbackServer(handler, "")


def test_verify_needs_a_healthy_zipkin() -> None:
    with stand({}, zipkin_up=False) as server:
        with pytest.raises(verify.VerifyError, match="does not answer /health"):
            verify.run_verify(server.endpoint, server.endpoint)


@pytest.mark.parametrize("documents", [
    {}, {"/config": {"components": []}}, {"/openapi.json": {"paths": {"/tts": {}}}}])
def test_an_app_that_is_neither_shape_is_one_error(documents) -> None:
    with stand(documents) as server:
        with pytest.raises(verify.VerifyError, match="neither a Gradio app nor the CosyVoice"):
            verify.detect(server.endpoint)


def test_a_gradio_app_without_generate_audio_is_not_a_cosyvoice_webui() -> None:
    config = {"dependencies": [{"api_name": "other", "inputs": []}], "components": []}
    with pytest.raises(verify.VerifyError, match="no generate_audio event"):
        verify.GradioApp("http://127.0.0.1:9", config)


class Bar:
    def __init__(self) -> None:
        self.updates: list[int] = []

    def update(self, n: int) -> None:
        self.updates.append(n)


def test_every_request_the_app_failed_is_a_failed_check_and_the_bar_completes() -> None:
    bars: list[Bar] = []

    def progress(plan):
        bars.append(Bar())
        return bars[-1]

    with stand({"/openapi.json": {"paths": {"/inference_sft": {}}}}) as server:
        report = verify.run_verify(server.endpoint, server.endpoint, requests=2,
                                   progress=progress, timeout=0.1)
    failed = [c for c in report.checks if c.name.startswith("request ")]
    assert [c.ok for c in failed] == [False, False] and not report.ok
    assert all(c.reason.startswith("the app failed the request: HTTP Error 500") for c in failed)
    assert re.fullmatch(r"request [0-9a-f]{8} \((sft|zero_shot)\)", failed[0].name)
    # the bad input is still looked for (its failure is the point); no trace came: the bar
    # is filled with what is still pending when the wait ends
    assert bars and bars[0].updates == [1]
