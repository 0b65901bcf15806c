"""The README's command blocks, run as a user copies them (issue 36: the README as written).

Every command line of every shell block in README.md is matched by one row of ``COMMANDS``:

* ``run``: executed as written, with the placeholders filled (``PLACEHOLDERS``: the README's
  ``http://zipkin:9411`` is the tests' Zipkin, ``webui.py`` the demo web UI with a tiny model,
  fixed ports free ones, brokers nobody runs a port that refuses), from the repository root,
  with ``.venv/bin`` first on PATH as the README tells (``source .venv/bin/activate``); it must
  exit as the row says;
* ``serve``: a command that runs until stopped (``cosyvoice-traced run ... -- python
  webui.py``): started the same way, it must answer on its port, serve one traced synthesis
  (read back from Zipkin) or its /metrics, then stop;
* ``covered``: run elsewhere, named: the quick start's commands are what CI itself runs
  (``.ci/run``), the real engine's by ``test_real_engine.py``;
* ``not here``: it needs what no test machine has (an Elasticsearch cluster, Kafka's shell
  tools), said so.

The Python block (the stage API example) is executed, and the Collector YAML validated by the
Collector ``.ci/setup`` builds. A new command or block without a row fails
``test_every_readme_command_has_a_row``: the README cannot drift from what is tested.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from cosyvoice_otel.tools.checks import check_synthesis
from cosyvoice_otel.tools.gradio_rest import GradioRest

from ..support.collector import binary_path as collector_path
from ..support.helpers import (
    BIN,
    ROOT,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    unavailable,
    wait_until,
)

pytestmark = pytest.mark.zipkin
README = ROOT / "README.md"

# diagrams and layouts: not commands
NOT_COMMANDS = ("client ──traceparent", "launcher/      cli.py", "replica 1 (cosyvoice-traced",
                "mobile app ──traceparent")

# (how the line starts, action, detail)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("cosyvoice-traced run --zipkin-endpoint http://zipkin:9411/api/v2/spans -- python webui.py",
     "serve", "synthesis"),
    ("bash .ci/setup --demo && .venv/bin/cosyvoice-traced demo", "covered",
     "tests/unit/test_setup_script.py runs .ci/setup --demo; tests/e2e/test_demo.py the demo"),
    ("bash .ci/setup && .venv/bin/python -m pytest -q", "covered",
     "what .ci/run runs: .ci/setup, then this very suite"),
    (".venv-cosyvoice/bin/python examples/make_real_model.py", "covered",
     "tests/support/real_models.py builds the tiny models with it (.ci/setup)"),
    (".venv-cosyvoice/bin/cosyvoice-traced run -- python examples/server.py --engine real",
     "covered", "tests/e2e/test_real_engine.py::test_our_fastapi_server_on_the_real_engine"),
    ("cosyvoice-traced report --zipkin http://zipkin:9411 --by audio.snr_db", "run", "0"),
    ("cosyvoice-traced report --zipkin http://zipkin:9411 --errors asr_empty_result", "run", "0"),
    ("cosyvoice-traced run --sampling-rate 0.1 --metrics prometheus", "serve", "metrics"),
    ("curl -H 'Accept: application/openmetrics-text' http://127.0.0.1:9464/metrics", "covered",
     "run by the serve row above it, against the app it started"),
    ("cosyvoice-traced run --exporter otlp --otlp-endpoint", "serve", "page"),
    ("cosyvoice-traced run --exporter kafka --kafka-bootstrap-servers", "serve", "page"),
    ("kafka-topics.sh --create", "not here",
     "Apache Kafka's shell tools are not installed (the tests' broker creates the topic)"),
    ("STORAGE_TYPE=elasticsearch ES_HOSTS=http://es:9200", "not here",
     "an Elasticsearch cluster and a replicated Kafka (tests/e2e/test_durable_store.py runs "
     "Zipkin's Kafka collector on OpenSearch)"),
    ("cosyvoice-traced nginx-config --upstream 10.0.0.11:8000", "run", "nginx"),
    ("cosyvoice-traced gateway-config --upstream 10.0.0.11:8000", "run", "0"),
    ("OTEL_PROPAGATORS=tracecontext,b3multi,b3 traefik", "covered",
     "tests/e2e/test_gateway.py starts Traefik so on what gateway-config wrote"),
    ("AUTH_TOKENS=change-me cosyvoice-traced run --service-name auth", "covered",
     "tests/e2e/test_gateway.py's edge fixture starts the auth service so"),
    ("cosyvoice-traced triage --zipkin http://zipkin:9411", "run", "0"),
    ("cosyvoice-traced report --zipkin http://zipkin:9411 --first-chunk", "run", "0"),
    ("cosyvoice-traced report --zipkin http://zipkin:9411 --compare service.version=1.0 "
     "--compare service.version=1.1 --same-input", "run", "0"),
    ("cosyvoice-traced report --zipkin http://zipkin:9411 --by service.instance.id", "run", "0"),
)


def blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(encoding="utf-8"),
                      re.S | re.M)


def commands() -> list[str]:
    """Every command line of the shell blocks, continuations joined, comment lines left out."""
    found = []
    for lang, body in blocks():
        if lang not in ("", "bash", "sh") or body.lstrip().startswith(NOT_COMMANDS):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line and not line.startswith("#"):
                found.append(line)
    return found


def row(command: str) -> tuple[str, str, str]:
    matches = [r for r in COMMANDS if command.startswith(r[0])]
    assert len(matches) == 1, f"README command without exactly one row: {command}"
    return matches[0]


def test_every_readme_command_has_a_row() -> None:
    listed = commands()
    assert len(listed) >= 10
    used = {row(command)[0] for command in listed}
    assert used == {r[0] for r in COMMANDS}, "a row no README command uses"


class Fill:
    """The placeholders of one test: the real things standing for the README's."""

    def __init__(self, zipkin, model: Path) -> None:
        self.zipkin, self.model = zipkin, model
        self.ports = {"8000": str(free_port()), "9464": str(free_port())}
        self.refused = str(free_port())
        self.out = tempfile.mkdtemp(prefix="readme-gateway-")  # gateway-config's --out

    def __call__(self, command: str) -> str:
        command = command.replace("http://zipkin:9411", self.zipkin.base_url)
        command = command.replace("--out ./traefik", f"--out {self.out}")
        command = command.replace("python webui.py",
                                  f"python examples/webui.py --model_dir {self.model}")
        command = re.sub(r"kafka-\d:9092(,kafka-\d:9092)*", f"127.0.0.1:{self.refused}",
                         command)
        command = command.replace("http://127.0.0.1:4318", f"http://127.0.0.1:{self.refused}")
        for old, new in self.ports.items():
            command = re.sub(rf"(?<=[ :]){old}\b", new, command)
        if "examples/webui.py" in command and "--port" not in command:
            command += f" --port {self.ports['8000']}"  # its default port, 8000, filled too
        return command


def env() -> dict[str, str]:
    """A shell after ``source .venv/bin/activate``."""
    return app_env(VIRTUAL_ENV=str(ROOT / ".venv"), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
                   GRADIO_ANALYTICS_ENABLED="False")


def run(command: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(command, shell=True, cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == expect, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def tiny_model(make_model) -> Path:
    return make_model(3)


def serve(launch_app, fill: Fill, command: str, check: str, prompt_file: Path) -> None:
    argv = shlex.split(fill(command))
    port = int(argv[argv.index("--port") + 1])
    app = launch_app(argv, env(), port)
    if check == "synthesis":  # one traced request, read back whole from the README's Zipkin
        trace_id = new_trace_id()
        client = GradioRest(app.url, headers={"b3": f"{trace_id}-{new_span_id()}-1"})
        output = client.join("generate_audio", ["A README request.", "pretrained voice",
                                                "中文女", "", None, None, "", 0, False, 1.0])
        assert output and output[0]
        spans = fill.zipkin.client().wait_for_trace(
            trace_id, lambda got: not check_synthesis(got, "sft", False), timeout=30)
        assert check_synthesis(spans, "sft", False) == []
    elif check == "metrics":  # the curl line after it, as written (its port filled)
        (curl,) = [c for c in commands() if c.startswith("curl ")]
        assert requests.get(app.url, timeout=10).status_code == 200
        assert wait_until(lambda: "# EOF" in subprocess.run(
            fill(curl), shell=True, capture_output=True, text=True, timeout=30).stdout,
            timeout=30)
    else:  # the app answers behind the launcher
        assert requests.get(app.url, timeout=10).status_code == 200
    output = app.stop()
    assert "Traceback" not in output, output[-3000:]


def test_the_readme_commands_run_as_written(zipkin, launch_app, tiny_model,
                                            prompt_file) -> None:
    fill = Fill(zipkin, tiny_model)
    ran = {"run": 0, "serve": 0}
    for command in commands():  # in the README's order: its reports read what it served
        _start, action, detail = row(command)
        if action == "serve":
            serve(launch_app, fill, command, detail, prompt_file)
        elif action == "run":
            done = run(fill(command))
            if detail == "nginx":  # and nginx accepts what it printed
                check_nginx(done.stdout)
        else:
            continue
        ran[action] += 1
    assert ran == {"run": 8, "serve": 5}  # the web UI line twice: alone, and behind the gateway


def check_nginx(blocks_text: str) -> None:
    import shutil

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        unavailable("nginx is not installed (.ci/setup installs it)", "nginx is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        blocks_text = blocks_text.replace("/var/log/nginx/", f"{tmp}/")
        (Path(tmp) / "b3.conf").write_text(blocks_text)
        (Path(tmp) / "nginx.conf").write_text(
            f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
            "http { include b3.conf; }\n")
        test = subprocess.run([nginx, "-t", "-p", tmp, "-c", f"{tmp}/nginx.conf"],
                              capture_output=True, text=True, timeout=60)
        assert test.returncode == 0, test.stderr


def test_the_python_example_runs_inside_a_request() -> None:
    """The stage API example, as written, then called the way an app would."""
    (example,) = [body for lang, body in blocks() if lang == "python"]
    driver = example + (
        "\nfrom opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import "
        "InMemorySpanExporter\n"
        "from cosyvoice_otel.instrumentation import api\n"
        "from tests.support.tracing import stage_options\n"
        "memory = InMemorySpanExporter(); provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(memory))\n"
        "api.activate(provider, stage_options())\n"
        "with provider.get_tracer('t').start_as_current_span('request'):\n"
        "    assert check_prompt(31.0, 'x', 9.0) is False\n"
        "    assert check_prompt(3.0, '', 2.5) is False\n"
        "    assert check_prompt(3.0, 'x', 9.0) is True\n"
        "    rewrite('text')\n"
        "names = [s.name for s in memory.get_finished_spans()]\n"
        "assert names.count('prompt_check') == 3 and 'dialect_rewrite' in names, names\n"
        "reasons = [s.attributes.get('error.type') for s in memory.get_finished_spans()]\n"
        "assert {'invalid_input_duration', 'asr_empty_result'} <= set(reasons), reasons\n"
        "print('ok')\n")
    done = subprocess.run([str(BIN / "python"), "-c", driver], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env())
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_the_collector_yaml_is_a_valid_collector_config(tmp_path) -> None:
    (config,) = [body for lang, body in blocks() if lang == "yaml"]
    binary = collector_path()
    if not Path(binary).exists():
        unavailable("the Collector is not built (.ci/setup builds it)", "no Collector binary")
    (tmp_path / "collector.yaml").write_text(config)
    done = subprocess.run([str(binary), "validate", "--config", str(tmp_path / "collector.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
