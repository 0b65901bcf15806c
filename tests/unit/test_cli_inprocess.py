"""The commands run in-process, with the exec at their end recorded instead of made (issue 31:
`run`, `env`, `verify`, `doctor`, `nginx-config` and `report` lines that only launched
processes ran, where a test could see that a command ran, not which line said what)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from cosyvoice_otel import schema as s
from cosyvoice_otel.launcher import cli, launcher
from cosyvoice_otel.tools import doctor, nginx

from ..support.loopback_server import LoopbackServer, QuietHandler


class Exec(Exception):
    """exec never returns: the recorder stops the command where the exec would."""


def main(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def execs(monkeypatch) -> list[tuple]:
    made: list[tuple] = []

    def untouched(program):
        made.append(("untouched", list(program)))
        raise Exec

    def traced(instrument, program, env):
        made.append(("traced", instrument, list(program), env))
        raise Exec

    monkeypatch.setattr(launcher, "exec_untouched", untouched)
    monkeypatch.setattr(launcher, "exec_traced", traced)
    monkeypatch.setattr(launcher, "find_instrument", lambda: "/venv/bin/opentelemetry-instrument")
    monkeypatch.setattr(launcher, "check_endpoint_in_background",
                        lambda url: made.append(("probe", url)))
    for name in list(os.environ):
        if name.startswith(("COSYVOICE_TRACED_", "OTEL_")):
            monkeypatch.delenv(name)
    return made


def run(capsys, *args: str) -> tuple[str, str]:
    with pytest.raises(Exec):
        cli.main(["run", *args])
    out = capsys.readouterr()
    return out.out, out.err


def test_run_with_tracing_disabled_execs_the_program_untouched(capsys, execs) -> None:
    run(capsys, "--disable-tracing", "--", "python", "-c", "pass")
    assert execs == [("untouched", [sys.executable, "-c", "pass"])]


def test_run_execs_under_opentelemetry_instrument_with_the_rendered_environment(
        capsys, execs) -> None:
    run(capsys, "--zipkin-endpoint", "http://zipkin:9411/api/v2/spans", "--", "python", "-V")
    probe, (kind, instrument, program, env) = execs
    assert probe == ("probe", "http://zipkin:9411/api/v2/spans")  # a warning, in background
    assert (kind, instrument, program) == ("traced", "/venv/bin/opentelemetry-instrument",
                                           [sys.executable, "-V"])
    assert env["COSYVOICE_TRACED_ZIPKIN_ENDPOINT"] == "http://zipkin:9411/api/v2/spans"


def test_run_warns_about_uvicorn_workers_and_debug_describes_the_settings(
        capsys, execs, monkeypatch, tmp_path) -> None:
    uvicorn = tmp_path / "uvicorn"
    uvicorn.write_text("#!/bin/sh\n")
    uvicorn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    _, err = run(capsys, "--exporter", "none", "--debug", "--", "uvicorn", "app:app",
                 "--workers", "4")
    lines = err.splitlines()
    assert lines[0].startswith("cosyvoice-traced: warning: uvicorn --workers 4 runs the app")
    assert len(lines) > 3 and all(line.startswith("cosyvoice-traced: ") for line in lines)
    assert any("exporter" in line and "none" in line for line in lines[1:])
    assert [e[0] for e in execs] == ["traced"]  # exporter none: no endpoint to probe


def test_run_with_kafka_but_no_client_library_is_one_usage_line(capsys, execs,
                                                                monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "confluent_kafka" else real(name, *a))
    code, _, err = main(capsys, "run", "--exporter", "kafka", "--", "python", "-V")
    assert code == 2 and err.count("\n") == 1
    assert "--exporter kafka needs confluent_kafka: pip install 'cosyvoice-otel[kafka]'" in err
    assert execs == []


@pytest.mark.parametrize(("argv", "message"), [
    ([], "missing program"),
    (["missing_app.py"], "program not found: no file 'missing_app.py'"),
    (["no-such-program-anywhere"], "is not a file nor on PATH"),
])
def test_run_and_env_name_a_program_they_cannot_find(capsys, execs, argv, message) -> None:
    for command in (["run", "--"], ["env", "--"]):
        if not argv and command[0] == "env":
            continue  # env without a program prints the environment only
        code, _, err = main(capsys, *command, *argv)
        assert code == 2 and message in err and err.count("\n") == 1
    assert execs == []


def test_env_with_a_program_prints_the_command_run_would_exec(capsys, execs) -> None:
    code, out, _ = main(capsys, "env", "--check-endpoint", "--", "python", "app.py", "--port",
                        "8000 x")
    assert code == 0
    lines = out.splitlines()
    assert lines[-2] == f"set -- {sys.executable} app.py --port '8000 x'"
    assert lines[-1] == "instrument=/venv/bin/opentelemetry-instrument"
    assert "export OTEL_PYTHON_DISTRO=cosyvoice_otel" in lines
    assert ("probe", "http://localhost:9411/api/v2/spans") in execs


def test_env_with_tracing_disabled_sets_nothing_and_names_no_instrument(capsys, execs) -> None:
    code, out, _ = main(capsys, "env", "--disable-tracing", "--", "python", "app.py")
    assert code == 0
    assert out.splitlines() == ["# tracing disabled: the program runs untouched, nothing to set",
                                f"set -- {sys.executable} app.py"]


def test_a_bad_setting_is_a_warning_line_and_the_default(capsys, execs, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "maybe")  # an OTEL_* fallback: warned, not fatal
    code, out, err = main(capsys, "env")
    assert code == 0
    assert err == ("cosyvoice-traced: warning: OTEL_SDK_DISABLED: expected true or false, got "
                   "'maybe'; using the default true\n")
    assert "export OTEL_PYTHON_DISTRO=cosyvoice_otel" in out.splitlines()


@pytest.mark.parametrize(("program", "expected"), [
    (["python3", "a.py"], [sys.executable, "a.py"]),
    (["-m", "pkg.mod", "x"], [sys.executable, "-m", "pkg.mod", "x"]),
])
def test_resolve_program_puts_our_python_first(program, expected) -> None:
    assert launcher.resolve_program(program) == expected


def test_resolve_program_runs_an_existing_script_with_our_python(tmp_path) -> None:
    script = tmp_path / "webui.py"
    script.write_text("")
    assert launcher.resolve_program([str(script), "--port", "1"]) == [
        sys.executable, str(script), "--port", "1"]


@pytest.mark.parametrize(("argv", "warned"), [
    (["/bin/uvicorn", "app:app"], None),
    (["/bin/uvicorn", "app:app", "--workers", "1"], None),
    (["/bin/uvicorn", "app:app", "--workers", "3"], "--workers 3"),
    (["/bin/uvicorn", "app:app", "--workers=2"], "--workers 2"),
    (["/bin/uvicorn", "app:app", "--workers=x"], None),
    (["/bin/uvicorn", "app:app", "--reload"], "--reload"),
    (["/bin/uvicorn", "app:app", "--workers", "3", "--reload"], "--reload"),
    (["/usr/bin/python", "-m", "uvicorn", "app:app", "--workers", "2"], "--workers 2"),
    (["/usr/bin/python", "app.py", "--workers", "2"], None),
])
def test_uvicorn_child_processes_are_warned_about(argv, warned) -> None:
    got = launcher.uvicorn_warning(argv)
    if warned is None:
        assert got is None
    else:
        assert got.startswith(f"cosyvoice-traced: warning: uvicorn {warned} runs the app in "
                              "child processes")


def test_the_untouched_exec_flushes_both_streams_first(monkeypatch) -> None:
    order: list[str] = []

    class Stream:
        def __init__(self, name: str) -> None:
            self.name = name

        def flush(self) -> None:
            order.append(self.name)

    monkeypatch.setattr(sys, "stdout", Stream("stdout"))
    monkeypatch.setattr(sys, "stderr", Stream("stderr"))
    monkeypatch.setattr(launcher.os, "execv", lambda path, argv: order.append((path, argv)))
    launcher.exec_untouched(("/usr/bin/env", "true"))
    assert order == ["stdout", "stderr", ("/usr/bin/env", ["/usr/bin/env", "true"])]


# -- verify, doctor, nginx-config -------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--zipkin", "http://127.0.0.1:9"], "give exactly one of --app URL and --grpc HOST:PORT"),
    (["--app", "http://a:1", "--grpc", "a:1", "--zipkin", "http://z:1"], "give exactly one"),
    (["--grpc", "nohost", "--zipkin", "http://127.0.0.1:9"], "--grpc"),
    (["--app", "ftp://a:1", "--zipkin", "http://127.0.0.1:9"], "--app"),
])
def test_verify_bad_arguments_are_one_usage_line(capsys, args, message) -> None:
    code, _, err = main(capsys, "verify", *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_verify_a_grpc_target_nobody_serves_is_one_error(capsys, monkeypatch) -> None:
    from cosyvoice_otel.tools import verify

    def unreachable(*args, **kwargs):
        raise verify.VerifyError("no gRPC server answers at 127.0.0.1:1")

    monkeypatch.setattr(verify, "run_verify", unreachable)
    code, _, err = main(capsys, "verify", "--grpc", "127.0.0.1:1", "--zipkin",
                        "http://127.0.0.1:9")
    assert code == 1 and err == "cosyvoice-traced: error: no gRPC server answers at 127.0.0.1:1\n"


def test_doctor_prints_each_line_and_fails_on_a_failed_check(capsys, monkeypatch,
                                                             tmp_path) -> None:
    seen: list[tuple] = []

    def checks(*args):
        seen.append(args)
        return [doctor.Line(doctor.OK, "gradio", "5.4.0"),
                doctor.Line(doctor.FAIL, "zipkin", "did not answer")]

    monkeypatch.setattr(doctor, "run_doctor", checks)
    code, out, _ = main(capsys, "doctor", "--zipkin", "http://z:9411", "--cosyvoice-path",
                        str(tmp_path), "--stage", "mark=pkg.mod:Class.method")
    assert code == 1
    assert out.splitlines() == [f"{doctor.OK:4s}  gradio: 5.4.0", f"{doctor.FAIL:4s}  zipkin: did not answer"]
    ((zipkin, path, model, rows, metrics),) = seen
    assert (zipkin, path, model, metrics) == ("http://z:9411", str(tmp_path), None, None)
    assert [row.span for row in rows] == ["mark"]
    monkeypatch.setattr(doctor, "run_doctor", lambda *a: [doctor.Line(doctor.WARN, "x", "y")])
    assert main(capsys, "doctor")[0] == 0  # a warning is not a failure


def test_doctor_a_bad_stage_is_one_usage_line(capsys) -> None:
    code, _, err = main(capsys, "doctor", "--stage", "no equals sign")
    assert code == 2 and "--stage" in err and err.count("\n") == 1


def test_nginx_config_prints_the_rendered_blocks_or_one_usage_line(capsys) -> None:
    code, out, _ = main(capsys, "nginx-config", "--upstream", "127.0.0.1:8000", "--upstream",
                        "127.0.0.1:8001", "--listen", "0.0.0.0:9090")
    assert code == 0
    assert out == nginx.render(["127.0.0.1:8000", "127.0.0.1:8001"], "0.0.0.0:9090",
                               "/var/log/nginx/cosyvoice-access.log")
    code, _, err = main(capsys, "nginx-config", "--upstream", "not a host")
    assert code == 2 and err.count("\n") == 1


# -- report, against a Zipkin that answers with synthetic traces ------------------------------

def synthesis(trace_id: str, version: str, total: int, vocoder: int, sampled: bool = True):
    tags = {s.MODE: "sft", "service.version": version}
    if not sampled:
        tags[s.SAMPLING_RATE] = "0.5"
    return [{"traceId": trace_id, "id": "1", "name": s.INFERENCE, "timestamp": 1_000,
             "duration": total, "kind": "SERVER", "tags": tags},
            {"traceId": trace_id, "id": "2", "parentId": "1", "name": "vocoder",
             "timestamp": 2_000, "duration": vocoder, "tags": {}}]


@pytest.fixture
def zipkin():
    served: list = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.reply(200, json.dumps(served).encode(), "application/json")

    server = LoopbackServer(Handler, "")
    server.served = served
    served.extend(synthesis(f"a{i:031x}", "1.0", 100_000, 10_000 + i) for i in range(8))
    served.extend(synthesis(f"b{i:031x}", "1.1", 200_000, 40_000 + i) for i in range(8))
    yield server
    server.close()


def test_report_text_json_and_html_describe_the_same_traces(capsys, zipkin, tmp_path) -> None:
    from cosyvoice_otel.tools import report as rep

    code, text, _ = main(capsys, "report", "--zipkin", zipkin.endpoint)
    assert code == 0
    groups = rep.analyse(zipkin.served)
    assert text.rstrip("\n") == rep.to_text(groups, zipkin.endpoint)
    code, doc, _ = main(capsys, "report", "--zipkin", zipkin.endpoint, "--json")
    assert code == 0 and json.loads(doc) == json.loads(json.dumps(rep.to_dict(groups,
                                                                              zipkin.endpoint)))
    page = tmp_path / "r.html"
    code, _, _ = main(capsys, "report", "--zipkin", zipkin.endpoint, "--html", str(page))
    assert code == 0
    assert page.read_text(encoding="utf-8") == rep.to_html(groups, zipkin.endpoint,
                                                           "cosyvoice report: cosyvoice3")


def test_report_compare_text_json_and_html(capsys, zipkin, tmp_path) -> None:
    from cosyvoice_otel.tools import report as rep

    sides = ["--compare", "service.version=1.0", "--compare", "service.version=1.1"]
    code, text, _ = main(capsys, "report", "--zipkin", zipkin.endpoint, *sides)
    groups = rep.analyse(zipkin.served, "service.version")
    rows = rep.compare(groups, "1.0", "1.1")
    assert code == 0
    assert text.rstrip("\n") == rep.compare_text(rows, "service.version", "1.0", "1.1", groups)
    assert "slower" in text  # B's vocoder is four times A's
    code, doc, _ = main(capsys, "report", "--zipkin", zipkin.endpoint, *sides, "--json")
    assert code == 0 and json.loads(doc) == json.loads(json.dumps(
        rep.compare_dict(rows, "service.version", "1.0", "1.1", groups)))
    page = tmp_path / "c.html"
    code, _, _ = main(capsys, "report", "--zipkin", zipkin.endpoint, *sides, "--html", str(page))
    assert code == 0 and page.read_text(encoding="utf-8") == rep.compare_html(
        rows, "service.version", "1.0", "1.1", groups, "cosyvoice compare: cosyvoice3")


@pytest.mark.parametrize(("sides", "message"), [
    (["service.version=1.0"], "--compare takes two sides of the same key"),
    (["service.version=1.0", "mode=sft"], "--compare takes two sides of the same key"),
])
def test_report_compare_needs_two_sides_of_one_key(capsys, zipkin, sides, message) -> None:
    args = [arg for side in sides for arg in ("--compare", side)]
    code, _, err = main(capsys, "report", "--zipkin", zipkin.endpoint, *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_report_compare_with_a_side_that_has_no_requests_names_it(capsys, zipkin) -> None:
    code, _, err = main(capsys, "report", "--zipkin", zipkin.endpoint, "--compare",
                        "service.version=1.0", "--compare", "service.version=2.0")
    assert code == 1
    assert err == ("cosyvoice-traced: error: no requests with service.version=2.0 in the last "
                   "1h (seen: 1.0, 1.1)\n")


def test_report_says_on_stderr_when_traces_were_sampled(capsys, zipkin) -> None:
    from cosyvoice_otel.tools import report as rep

    zipkin.served[:] = [synthesis(f"c{i:031x}", "1.0", 100_000, 10_000, sampled=False)
                        for i in range(4)]
    code, out, err = main(capsys, "report", "--zipkin", zipkin.endpoint, "--json")
    assert code == 0 and json.loads(out)  # stdout stays one JSON document
    assert err.rstrip("\n") == rep.sampling_note(zipkin.served)


def test_report_html_path_is_written_where_asked(capsys, zipkin, tmp_path) -> None:
    page = tmp_path / "deeper" / "r.html"
    page.parent.mkdir()
    main(capsys, "report", "--zipkin", zipkin.endpoint, "--html", str(page))
    assert page.is_file()
