"""``cosyvoice-traced demo``'s own steps, each way it can end (issue 31: lines only the e2e
demo ran, or none): the app it launches is a stand-in process, Gradio's answer and Zipkin's
are scripted here; the real demo runs end to end in ``tests/e2e/test_quickstart.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cosyvoice_otel.tools import demo, zipkin_server
from cosyvoice_otel.tools.gradio_rest import GradioError
from cosyvoice_otel.tools.net import PortWaitError


class Rig:
    def __init__(self, tmp_path: Path, monkeypatch) -> None:
        self.lines: list[str] = []
        self.launched: list[list[str]] = []
        self.answer: object = ["/tmp/out.wav"]
        self.port_error: str | None = None
        self.spans: list[dict] = []
        self.trace_ids: list[str] = []
        self.model = tmp_path / "model"
        self.model.mkdir()
        (self.model / "cosyvoice3.yaml").write_text("llm: !new:cosyvoice.llm.llm.Qwen2LM\n")
        monkeypatch.chdir(tmp_path)
        rig = self
        real_popen = subprocess.Popen

        def popen(args, **kwargs):
            rig.launched.append(list(args))
            return real_popen([sys.executable, "-c", "import time; time.sleep(30)"])

        def wait(port, proc=None, timeout=60):
            if rig.port_error:
                raise PortWaitError(rig.port_error)

        class Rest:
            def __init__(self, url, headers):
                rig.trace_ids.append(headers["traceparent"].split("-")[1])

            def join(self, api_name, data):
                if isinstance(rig.answer, Exception):
                    raise rig.answer
                return rig.answer

        monkeypatch.setattr(demo.subprocess, "Popen", popen)
        monkeypatch.setattr(demo, "wait_for_port", wait)
        monkeypatch.setattr(demo, "GradioRest", Rest)

    def zipkin(self) -> types.SimpleNamespace:
        rig = self
        return types.SimpleNamespace(
            wait_for_trace=lambda trace_id, ready, timeout: rig.spans,
            ui_link=lambda trace_id: f"http://zipkin/traces/{trace_id}")

    def run(self, endpoint: str | None = "http://zipkin:9411/api/v2/spans") -> int:
        return demo.run_demo(endpoint, 7860, self.model, 9411, echo=self.lines.append)


@pytest.fixture
def rig(tmp_path, monkeypatch) -> Rig:
    return Rig(tmp_path, monkeypatch)


def test_the_demo_needs_the_examples_folder(rig, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(demo, "EXAMPLES", tmp_path / "nowhere")
    with pytest.raises(demo.DemoError, match="needs the examples/ folder"):
        rig.run()
    assert rig.launched == []


def test_a_demo_app_that_never_listens_is_one_error(rig) -> None:
    rig.port_error = "exited with status 1 before listening"
    with pytest.raises(demo.DemoError,
                       match="^the demo app exited with status 1 before listening$"):
        rig.run()


def test_a_synthesis_gradio_refuses_is_the_demos_error(rig) -> None:
    rig.answer = GradioError("generate_audio: the model failed")
    with pytest.raises(demo.DemoError, match="^generate_audio: the model failed$"):
        rig.run()


def test_a_trace_that_never_reaches_zipkin_is_one_error(rig, monkeypatch) -> None:
    monkeypatch.setattr(demo.ZipkinClient, "from_endpoint", staticmethod(lambda e: rig.zipkin()))
    with pytest.raises(demo.DemoError, match="^trace [0-9a-f]{32} did not reach Zipkin$") as caught:
        rig.run()
    assert rig.trace_ids[0] in str(caught.value)  # the id it sent, to look for by hand


def test_the_demo_prints_the_trace_it_read_back(rig, monkeypatch) -> None:
    monkeypatch.setattr(demo.ZipkinClient, "from_endpoint", staticmethod(lambda e: rig.zipkin()))
    rig.spans = [{"traceId": "t", "id": "1", "name": "gradio.event", "timestamp": 1,
                  "duration": 9}]
    assert rig.run() == 0
    (trace_id,) = rig.trace_ids
    assert f"trace {trace_id}: 1 spans" in "\n".join(rig.lines)
    assert rig.lines[-1] == f"\nopen it in Zipkin: http://zipkin/traces/{trace_id}"
    assert rig.launched[0][rig.launched[0].index("--zipkin-endpoint") + 1] == (
        "http://zipkin:9411/api/v2/spans")


def test_without_an_endpoint_the_demo_starts_zipkin_and_sends_there(rig, monkeypatch) -> None:
    server = types.SimpleNamespace(base_url="http://127.0.0.1:9411",
                                   endpoint="http://127.0.0.1:9411/api/v2/spans",
                                   client=rig.zipkin)
    monkeypatch.setattr(zipkin_server, "start_detached", lambda port: server)
    rig.spans = [{"traceId": "t", "id": "1", "name": "gradio.event", "timestamp": 1,
                  "duration": 9}]
    assert rig.run(endpoint=None) == 0
    assert rig.lines[0] == ("Zipkin is running at http://127.0.0.1:9411 (stop it: "
                            "cosyvoice-traced zipkin stop)")
    command = rig.launched[0]
    assert command[command.index("--zipkin-endpoint") + 1] == server.endpoint
    assert "--exporter" not in command


def test_without_java_the_demo_writes_a_trace_file_or_says_it_could_not(
        rig, monkeypatch, tmp_path) -> None:
    def no_java(port):
        raise zipkin_server.ZipkinServerError("java not found: Zipkin needs Java 17+")

    monkeypatch.setattr(zipkin_server, "start_detached", no_java)
    monkeypatch.setattr(demo, "_wait_for_file_trace", lambda path, trace_id, timeout: None)
    with pytest.raises(demo.DemoError, match="^no spans were written to .*demo-trace.json$"):
        rig.run(endpoint=None)
    command = rig.launched[0]
    assert command[command.index("--exporter") + 1] == "zipkin-file"

    def written(path, trace_id, timeout):
        path.write_text(json.dumps([{"traceId": trace_id, "name": "gradio.event"}]))

    monkeypatch.setattr(demo, "_wait_for_file_trace", written)
    assert rig.run(endpoint=None) == 0
    assert rig.lines[-1].startswith(f"trace {rig.trace_ids[-1]} written to ")
    assert (tmp_path / "cosyvoice-demo-trace.json").is_file()


def test_waiting_for_the_trace_file_reads_a_half_written_file_as_nothing_yet(
        tmp_path, monkeypatch) -> None:
    clock = iter(range(100))
    monkeypatch.setattr(demo.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(demo.time, "sleep", lambda s: None)
    path = tmp_path / "t.json"
    path.write_text('[{"traceId": "t1", "na')  # the exporter is still writing it
    demo._wait_for_file_trace(path, "t1", timeout=3)  # bounded, no error


def test_the_demo_writes_its_tiny_model_once(rig, monkeypatch) -> None:
    (rig.model / "cosyvoice3.yaml").unlink()
    written: list[list[str]] = []
    real_run = subprocess.run

    def run(args, **kwargs):
        if str(args[1]).endswith("make_tiny_model.py"):
            written.append([str(a) for a in args])
            (rig.model / "cosyvoice3.yaml").write_text("llm: !new:cosyvoice.llm.llm.Qwen2LM\n")
            return subprocess.CompletedProcess(args, 0)
        return real_run(args, **kwargs)

    monkeypatch.setattr(demo.subprocess, "run", run)
    monkeypatch.setattr(demo.ZipkinClient, "from_endpoint", staticmethod(lambda e: rig.zipkin()))
    rig.spans = [{"traceId": "t", "id": "1", "name": "gradio.event", "timestamp": 1,
                  "duration": 9}]
    assert rig.run() == 0
    assert written == [[sys.executable, str(demo.EXAMPLES / "make_tiny_model.py"),
                        str(rig.model)]]
    assert rig.lines[0] == f"writing the tiny demo model to {rig.model}"
    assert rig.run() == 0 and len(written) == 1  # there now: not written again


def test_the_trace_is_read_back_while_the_app_still_runs(rig, monkeypatch) -> None:
    """The Gradio event's span ends just after the client has its answer: stopping the app
    before the trace is in Zipkin could lose it (seen once under load)."""
    stopped: list[bool] = []
    monkeypatch.setattr(demo, "stop", lambda app, grace: stopped.append(True))
    seen_running: list[bool] = []

    def wait_for_trace(trace_id, ready, timeout):
        seen_running.append(not stopped)
        return [{"traceId": "t", "id": "1", "name": "gradio.event", "timestamp": 1,
                 "duration": 9}]

    zipkin = types.SimpleNamespace(wait_for_trace=wait_for_trace,
                                   ui_link=lambda trace_id: "http://zipkin/x")
    monkeypatch.setattr(demo.ZipkinClient, "from_endpoint", staticmethod(lambda e: zipkin))
    assert rig.run() == 0
    assert seen_running == [True] and stopped == [True]
