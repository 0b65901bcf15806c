"""``cosyvoice-traced demo``: one traced synthesis, end to end, on an embedded default.

1. write the tiny demo model (``examples/make_tiny_model.py``) into the cache, once;
2. start a local Zipkin from the official jar (left running for you to browse; stop it with
   ``cosyvoice-traced zipkin stop``), unless ``--zipkin-endpoint`` is given; without Java, spans
   go to a Zipkin JSON file instead (load it in any Zipkin UI with "Upload JSON");
3. run ``examples/webui.py`` under ``cosyvoice-traced run``;
4. send one synthesis through Gradio's queue with a trace id chosen here (W3C traceparent);
5. read the trace back from Zipkin, print its stage tree and its UI link; stop the app.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from cosyvoice_otel.tools import zipkin_server
from cosyvoice_otel.tools.gradio_rest import GradioError, GradioRest
from cosyvoice_otel.tools.net import PortWaitError, stop, wait_for_port
from cosyvoice_otel.tools.zipkin import ZipkinClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # the checkout's examples/
DEMO_TEXT = "Hello from the CosyVoice demo engine. 你好，这是一次被追踪的语音合成。"


class DemoError(Exception):
    """The demo could not run; the message says why in one line."""


def _wait_for_file_trace(path: Path, trace_id: str, timeout: float) -> None:
    import json

    deadline = time.monotonic() + timeout
    wanted = {"gradio.event", "cosyvoice.inference"}
    while time.monotonic() < deadline:
        try:
            names = {s["name"] for s in json.loads(path.read_text()) if s["traceId"] == trace_id}
        except (OSError, ValueError, KeyError):
            names = set()
        if wanted <= names:
            return
        time.sleep(0.2)


def tree_lines(spans: list[dict]) -> list[str]:
    """Zipkin spans as an indented tree: name, duration (ms), share of the longest span."""
    by_id = {s["id"]: s for s in spans}
    children: dict[str | None, list[dict]] = {}
    for span in spans:
        parent = span.get("parentId") if span.get("parentId") in by_id else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    total = max((s.get("duration", 0) for s in spans), default=0) / 1000 or 1.0

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.get("timestamp", 0)):
            ms = span.get("duration", 0) / 1000
            lines.append(f"{'  ' * depth}{span['name']:<{44 - 2 * depth}} {ms:9.1f} ms "
                         f"{100 * ms / total:5.1f}%")
            walk(span["id"], depth + 1)

    walk(None, 0)
    return lines


def run_demo(zipkin_endpoint: str | None, port: int, model_dir: Path | None,
             zipkin_port: int, echo=print) -> int:
    if not (EXAMPLES / "webui.py").is_file():
        raise DemoError(f"the demo needs the examples/ folder of a cosyvoice-otel checkout "
                        f"(looked in {EXAMPLES})")
    model_dir = model_dir or zipkin_server.cache_dir() / "tiny-cosyvoice3"
    config = model_dir / "cosyvoice3.yaml"
    # a model written by an older demo (its config names no classes) is written again
    if not config.is_file() or "!new:" not in config.read_text(encoding="utf-8"):
        echo(f"writing the tiny demo model to {model_dir}")
        subprocess.run([sys.executable, str(EXAMPLES / "make_tiny_model.py"), str(model_dir)],
                       check=True, stdout=subprocess.DEVNULL)
    exporter_args: list[str]
    zipkin: ZipkinClient | None = None
    trace_file = Path.cwd() / "cosyvoice-demo-trace.json"
    if zipkin_endpoint:
        exporter_args = ["--zipkin-endpoint", zipkin_endpoint]
        zipkin = ZipkinClient.from_endpoint(zipkin_endpoint)
    else:
        try:
            server = zipkin_server.start_detached(zipkin_port)
            echo(f"Zipkin is running at {server.base_url} (stop it: cosyvoice-traced zipkin stop)")
            exporter_args = ["--zipkin-endpoint", server.endpoint]
            zipkin = server.client()
        except zipkin_server.ZipkinServerError as exc:
            echo(f"no local Zipkin ({exc.args[0].splitlines()[0]}); writing Zipkin JSON to "
                 f"{trace_file} instead: load it in a Zipkin UI with 'Upload JSON'")
            trace_file.unlink(missing_ok=True)
            exporter_args = ["--exporter", "zipkin-file", "--zipkin-file", str(trace_file)]
    env = dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="200")
    traced = [sys.executable, "-m", "cosyvoice_otel", "run", "--service-name", "cosyvoice3-demo",
              *exporter_args, "--", "python", str(EXAMPLES / "webui.py"), "--port", str(port),
              "--model_dir", str(model_dir)]
    echo("starting: cosyvoice-traced run ... -- python examples/webui.py")
    app = subprocess.Popen(traced, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    trace_id = secrets.token_hex(16)
    try:
        try:
            wait_for_port(port, app, timeout=120)
        except PortWaitError as exc:
            raise DemoError(f"the demo app {exc}") from None
        client = GradioRest(f"http://127.0.0.1:{port}",
                            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
        started = time.monotonic()
        output = client.join("generate_audio", [DEMO_TEXT, "pretrained voice", "中文女", "", None,
                                                None, "", 0, False, 1.0])
        echo(f"synthesised in {time.monotonic() - started:.2f} s: {output[0] if output else '?'}")
        wanted = {"gradio.event", "cosyvoice.inference", "model.tts", "vocoder"}
        if zipkin is None:  # let the export thread write the file before the app stops
            _wait_for_file_trace(trace_file, trace_id, timeout=15)
        else:  # the whole trace is in Zipkin before the app stops: the Gradio event's span
            # ends just after the client has its answer, and a SIGTERM in between loses it
            spans = zipkin.wait_for_trace(trace_id, lambda sp: wanted <= {s["name"] for s in sp},
                                          timeout=30)
    except GradioError as exc:
        raise DemoError(str(exc)) from None
    finally:
        stop(app, grace=30)  # SIGTERM: the SDK flushes its spans at exit
    if zipkin is None:
        if not trace_file.is_file():
            raise DemoError(f"no spans were written to {trace_file}")
        echo(f"trace {trace_id} written to {trace_file}")
        return 0
    if not spans:
        raise DemoError(f"trace {trace_id} did not reach Zipkin")
    echo(f"\ntrace {trace_id}: {len(spans)} spans")
    for line in tree_lines([s for s in spans if "http send" not in s["name"]
                            and "http receive" not in s["name"]]):
        echo("  " + line)
    echo(f"\nopen it in Zipkin: {zipkin.ui_link(trace_id)}")
    return 0
