"""`cosyvoice-traced run` as a process: exec semantics, program forms, bad input, warnings."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ..support.helpers import BIN, ROOT, app_env, free_port, new_span_id, new_trace_id

TRACED = str(BIN / "cosyvoice-traced")


def run_traced(*args: str, env: dict | None = None, timeout: float = 60,
               **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([TRACED, *args], env=env or app_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def test_exit_status_is_the_apps_own() -> None:
    result = run_traced("run", "--exporter", "none", "--", "python", "-c",
                        "import sys; sys.exit(7)")
    assert result.returncode == 7, result.stderr


def test_the_app_runs_instrumented_in_the_launchers_own_process(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    probe = ("import json, os, sys; from opentelemetry import trace; "
             "provider = type(trace.get_tracer_provider()).__name__; "
             "json.dump({'pid': os.getpid(), 'provider': provider,"
             " 'stdin': sys.stdin.read()}, open(sys.argv[1], 'w'))")
    proc = subprocess.Popen([TRACED, "run", "--exporter", "none", "--", "python", "-c", probe,
                             str(out)], env=app_env(), cwd=ROOT, stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate("hello from stdin", timeout=60)
    assert proc.returncode == 0, err
    seen = json.loads(out.read_text())
    assert seen["pid"] == proc.pid  # exec, not a child process
    assert seen["provider"] == "TracerProvider"  # the SDK provider set up by the distro
    assert seen["stdin"] == "hello from stdin"


def test_sigterm_reaches_the_app() -> None:
    app = ("import signal, sys, time\n"
           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
           "print('ready', flush=True)\n"
           "time.sleep(60)\n")
    proc = subprocess.Popen([TRACED, "run", "--exporter", "none", "--", "python", "-c", app],
                            env=app_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 42


def test_an_app_without_a_sigterm_handler_flushes_its_spans_then_dies_by_sigterm(
        tmp_path: Path) -> None:
    """The SDK flushes only in atexit, which death by SIGTERM skips: our handler flushes, then
    re-raises SIGTERM, so the exit status is still "killed by SIGTERM"."""
    out = tmp_path / "spans.json"
    app = ("import time\n"
           "from opentelemetry import trace\n"
           "trace.get_tracer('probe').start_span('before-sigterm').end()\n"
           "print('ready', flush=True)\n"
           "time.sleep(60)\n")
    env = app_env(OTEL_BSP_SCHEDULE_DELAY="600000")  # only the flush can export it
    proc = subprocess.Popen([TRACED, "run", "--exporter", "zipkin-file", "--zipkin-file",
                             str(out), "--", "python", "-c", app], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert not out.exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    assert [s["name"] for s in json.loads(out.read_text())] == ["before-sigterm"]


@pytest.mark.parametrize("form", ["python", "file", "module", "path"])
def test_program_forms(tmp_path: Path, form: str) -> None:
    script = tmp_path / "app.py"
    script.write_text("import sys; print('argv', sys.argv[1:])\n")
    (tmp_path / "tinymod.py").write_text("import sys; print('argv', sys.argv[1:])\n")
    argv = {
        "python": ["python", str(script), "a", "--port", "1"],
        "file": [str(script), "a", "--port", "1"],
        "module": ["-m", "tinymod", "a", "--port", "1"],
        "path": ["env", sys.executable, str(script), "a", "--port", "1"],
    }[form]
    env = app_env(PYTHONPATH=str(tmp_path))
    result = run_traced("run", "--exporter", "none", *argv, env=env)
    assert result.returncode == 0, result.stderr
    assert "argv ['a', '--port', '1']" in result.stdout


def test_disable_tracing_runs_the_program_untouched() -> None:
    probe = ("import os, sys; print(sorted(k for k in os.environ if k.startswith('OTEL_')), "
             "'sitecustomize' in sys.modules and 'opentelemetry' in "
             "str(getattr(sys.modules['sitecustomize'], '__file__', '')))")
    for args in (["--disable-tracing"], []):
        env = app_env(**({} if args else {"COSYVOICE_TRACED_TRACING": "false"}))
        env.pop("OTEL_BSP_SCHEDULE_DELAY")
        result = run_traced("run", *args, "--", "python", "-c", probe, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[] False"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--no-such-flag", "python", "-c", "pass"], "--no-such-flag"),
        (["run", "--sampling-rate", "1.5", "--", "python", "-c", "pass"], "--sampling-rate"),
        (["run", "--sampling-rate", "lots", "--", "python", "-c", "pass"], "--sampling-rate"),
        (["run", "--zipkin-endpoint", "zipkin:9411", "--", "python", "-c", "pass"],
         "--zipkin-endpoint"),
        (["run"], "missing program"),
        (["run", "--"], "missing program"),
        (["run", "--", "definitely-not-a-program-xyz"], "program not found"),
        (["run", "--", "missing_app.py"], "program not found"),
        (["env", "--exporter", "jaeger"], "--exporter"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_and_nothing_starts(tmp_path: Path, args, needle) -> None:
    marker = tmp_path / "started"
    # were anything started, this would create the marker file
    args = [a if a != "pass" else f"open({str(marker)!r}, 'w')" for a in args]
    result = run_traced(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_bad_environment_variable_is_a_usage_error_too() -> None:
    result = run_traced("run", "--", "python", "-c", "pass",
                        env=app_env(COSYVOICE_TRACED_SAMPLING_RATE="2"))
    assert result.returncode == 2
    assert result.stderr.strip() == ("cosyvoice-traced: error: COSYVOICE_TRACED_SAMPLING_RATE: "
                                     "expected a number between 0 and 1, got '2'")


def test_unreachable_endpoint_warns_once_but_the_app_runs(refused_endpoint) -> None:
    result = run_traced("run", "--zipkin-endpoint", refused_endpoint, "--", "python", "-c",
                        "import time; time.sleep(2); print('app ran')")
    assert result.returncode == 0
    assert "app ran" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "did not answer" in line]
    assert len(warnings) == 1, result.stderr
    assert refused_endpoint in warnings[0]


@pytest.mark.parametrize("extra", [["--reload"], ["--workers", "4"], ["--workers=2"]])
def test_uvicorn_reload_or_workers_warns(extra) -> None:
    # --help keeps uvicorn from serving; the warning is printed before the exec
    result = run_traced("run", "--exporter", "none", "--", "uvicorn", "x:app", *extra, "--help")
    assert result.returncode == 0
    assert result.stderr.count("auto-instrumentation does not reach") == 1


def test_uvicorn_single_worker_does_not_warn() -> None:
    result = run_traced("run", "--exporter", "none", "--", "uvicorn", "x:app", "--workers", "1",
                        "--help")
    assert result.returncode == 0, result.stderr
    assert "does not reach" not in result.stderr


def test_env_command_prints_shell_and_dotenv(tmp_path: Path) -> None:
    result = run_traced("env", "--service-name", "tts prod", "--sampling-rate", "0.5")
    assert result.returncode == 0, result.stderr
    assert "export OTEL_SERVICE_NAME='tts prod'" in result.stdout.splitlines()
    # the shell lines, sourced, give back exactly the values
    shown = subprocess.run(["sh", "-c", f"{result.stdout}\necho \"$OTEL_SERVICE_NAME|"
                            "$OTEL_TRACES_SAMPLER_ARG\""], capture_output=True, text=True)
    assert shown.stdout.strip() == "tts prod|0.5"
    dotenv = run_traced("env", "--format", "dotenv", "--service-name", "tts prod")
    assert 'OTEL_SERVICE_NAME="tts prod"' in dotenv.stdout.splitlines()
    assert "OTEL_TRACES_EXPORTER=cosyvoice_zipkin" in dotenv.stdout.splitlines()


def test_seed_spelling_enable_tracing_is_accepted() -> None:
    result = run_traced("env", "--enable-tracing", "--zipkin-endpoint",
                        "http://zipkin:9411/api/v2/spans")
    assert result.returncode == 0
    assert "export OTEL_EXPORTER_ZIPKIN_ENDPOINT=http://zipkin:9411/api/v2/spans" in \
        result.stdout.splitlines()


def test_an_invalid_otel_value_is_one_warning_line_and_the_default() -> None:
    env = app_env(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="2",
                  OTEL_TRACES_EXPORTER="bogus")
    result = run_traced("env", env=env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2, result.stderr
    assert any("OTEL_TRACES_SAMPLER_ARG" in w for w in warnings)
    assert any("OTEL_TRACES_EXPORTER" in w for w in warnings)
    assert "export OTEL_TRACES_SAMPLER_ARG=1.0" in result.stdout
    assert "export OTEL_TRACES_EXPORTER=cosyvoice_zipkin" in result.stdout


@pytest.mark.zipkin
def test_a_sigtermed_server_delivers_its_last_request_to_zipkin(zipkin, launch_app) -> None:
    """uvicorn handles SIGTERM, then re-raises it into our handler: the last request's spans,
    still in the batch processor (5 s schedule) and then in the pipelined exporter's hands,
    reach Zipkin before the process dies (the handler shuts the provider down)."""
    port = free_port()
    app = launch_app([TRACED, "run", "--zipkin-endpoint", zipkin.endpoint, "--service-name",
                      "sigterm", "--", "python", "tests/support/apps/hello_fastapi.py", "--port",
                      str(port)], app_env(OTEL_BSP_SCHEDULE_DELAY="600000"), port)
    trace_id = new_trace_id()
    resp = requests.get(f"{app.url}/synthesize/alice", timeout=10, headers={
        "X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(), "X-B3-Sampled": "1"})
    assert resp.status_code == 200
    app.stop()
    assert zipkin.client().wait_for_trace(trace_id, timeout=20)
