"""``cosyvoice-traced gateway-config``: Traefik's two files, and every bad input one line, exit 2.
(The files run for real in tests/e2e/test_gateway.py, with Traefik, the Collector and Zipkin.)"""

from __future__ import annotations

import os

import pytest
import yaml

from cosyvoice_otel.launcher import cli
from cosyvoice_otel.tools import gateway

GOOD = ["--upstream", "10.0.0.11:8000", "--auth", "http://auth:9000/check", "--rate", "2/3",
        "--otlp-endpoint", "http://collector:4318/v1/traces"]


class Result:
    def __init__(self, capsys, args: tuple[str, ...]) -> None:
        try:
            self.exit_code = int(cli.main(["gateway-config", *args]) or 0)
        except SystemExit as exc:
            self.exit_code = int(exc.code or 0)
        captured = capsys.readouterr()
        self.output, self.error = captured.out, captured.err


@pytest.fixture
def run(capsys):
    return lambda *args: Result(capsys, args)


def test_both_files_are_written_and_say_what_was_asked(tmp_path, run) -> None:
    out = tmp_path / "gw"
    result = run(*GOOD, "--upstream", "10.0.0.12:8000", "--listen", "127.0.0.1:18080",
                 "--service-name", "edge", "--out", str(out))
    assert result.exit_code == 0, result.output
    static = yaml.safe_load((out / "traefik.yaml").read_text())
    dynamic = yaml.safe_load((out / "dynamic.yaml").read_text())
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    web = static["entryPoints"]["web"]
    assert web["address"] == "127.0.0.1:18080"
    assert web["observability"] == {"tracing": True, "traceVerbosity": "detailed"}
    # the hardening Traefik warns about when unset (it starts without a warning line: e2e)
    assert web["http"]["aliasHeadersStrategy"] == "delete"
    assert set(web["http"]["encodedCharacters"].values()) == {False}
    assert static["providers"]["file"] == {"filename": str((out / "dynamic.yaml").resolve()),
                                           "watch": False}
    assert static["tracing"] == {"serviceName": "edge", "sampleRate": 1.0,
                                 "otlp": {"http": {"endpoint": "http://collector:4318/v1/traces"}}}
    # nothing that would put a credential or a query value into a span
    assert "capturedRequestHeaders" not in str(static) and "safeQueryParams" not in str(static)
    router = dynamic["http"]["routers"]["cosyvoice"]
    assert router["middlewares"] == ["cosyvoice-auth", "cosyvoice-rate-limit"]  # auth first
    assert router["observability"] == {"tracing": True, "traceVerbosity": "detailed"}
    middlewares = dynamic["http"]["middlewares"]
    assert middlewares["cosyvoice-auth"]["forwardAuth"] == {
        "address": "http://auth:9000/check", "trustForwardHeader": False,
        "maxResponseBodySize": 65536}
    assert middlewares["cosyvoice-rate-limit"]["rateLimit"] == {
        "average": 2, "burst": 3, "period": "1s"}
    assert dynamic["http"]["services"]["cosyvoice"]["loadBalancer"]["servers"] == [
        {"url": "http://10.0.0.11:8000"}, {"url": "http://10.0.0.12:8000"}]
    lines = result.output.splitlines()
    assert lines == [f"wrote {out / 'traefik.yaml'}", f"wrote {out / 'dynamic.yaml'}",
                     f"start: OTEL_PROPAGATORS=tracecontext,b3multi,b3 traefik "
                     f"--configFile={(out / 'traefik.yaml').resolve()}"]


@pytest.mark.parametrize(("rate", "pair"), [("5", (5, 5)), ("2/10", (2, 10)), (" 7/1 ", (7, 1))])
def test_the_rate_is_average_and_burst(rate, pair) -> None:
    assert gateway.parse_rate(rate) == pair


@pytest.mark.parametrize(("change", "says"), [
    (("--rate", "0"), "--rate must be AVG[/BURST]"),
    (("--rate", "2/0"), "--rate must be AVG[/BURST]"),
    (("--rate", "fast"), "--rate must be AVG[/BURST]"),
    (("--rate", "1.5"), "--rate must be AVG[/BURST]"),
    (("--rate", "9" * 40), "--rate must be AVG[/BURST]"),
    (("--upstream", "nohost"), "--upstream must be HOST:PORT, got 'nohost'"),
    (("--upstream", "a:0"), "--upstream must be HOST:PORT"),
    (("--upstream", 'a"b:80'), "--upstream must be HOST:PORT"),
    (("--auth", "ftp://auth/check"), "--auth: expected an http:// or https:// URL"),
    (("--otlp-endpoint", "collector:4318"), "--otlp-endpoint: expected an http:// or https://"),
    (("--listen", "0.0.0.0:99999"), "--listen must be HOST:PORT"),
    (("--service-name", "bad name\n"), "--service-name must be letters, digits"),
])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, run, change, says) -> None:
    args = list(GOOD)
    if change[0] in args:
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += list(change)
    result = run(*args, "--out", str(tmp_path / "gw"))
    assert result.exit_code == 2, result.error
    assert result.output == "" and result.error.count("\n") == 1
    assert result.error.startswith("cosyvoice-traced: error: ") and says in result.error
    assert not (tmp_path / "gw").exists()  # nothing written for a refused command


def test_an_out_that_is_a_file_a_fifo_or_unwritable_is_one_line(tmp_path, run) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # under a file: the folder cannot be made (an OSError, not a check of ours)
    for out in (a_file, fifo, a_file / "inside"):
        result = run(*GOOD, "--out", str(out))
        assert result.exit_code == 2, (out, result.error)
        assert result.error.count("\n") == 1 and "--out" in result.error


def test_a_symlink_in_the_folder_is_replaced_not_followed(tmp_path, run) -> None:
    out = tmp_path / "gw"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "traefik.yaml").symlink_to(victim)
    assert run(*GOOD, "--out", str(out)).exit_code == 0
    assert victim.read_text() == "keep me"
    assert not (out / "traefik.yaml").is_symlink()
    assert "entryPoints" in (out / "traefik.yaml").read_text()


def test_a_rerun_replaces_the_files_whole(tmp_path, run) -> None:
    out = tmp_path / "gw"
    assert run(*GOOD, "--out", str(out)).exit_code == 0
    args = list(GOOD)
    args[args.index("--rate") + 1] = "9/12"
    assert run(*args, "--out", str(out)).exit_code == 0
    dynamic = yaml.safe_load((out / "dynamic.yaml").read_text())
    assert dynamic["http"]["middlewares"]["cosyvoice-rate-limit"]["rateLimit"]["average"] == 9
    assert sorted(p.name for p in out.iterdir()) == ["dynamic.yaml", "traefik.yaml"]
