"""launch.sh and `cosyvoice-traced run` give the program the same environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ..support.helpers import BIN, ROOT, app_env

# Set by a shell itself, not by the launchers.
SHELL_NOISE = {"_", "PWD", "OLDPWD", "SHLVL"}

DUMP = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


def child_env(launcher: list[str], env: dict[str, str], out: Path) -> dict[str, str]:
    result = subprocess.run([*launcher, "python", "-c", DUMP, str(out)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(out.read_text())
    return {k: v for k, v in seen.items() if k not in SHELL_NOISE}


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {"COSYVOICE_TRACED_SERVICE_NAME": "tts-eu", "COSYVOICE_TRACED_SAMPLING_RATE": "0.2",
         "COSYVOICE_TRACED_STAGE_SPANS": "false", "OTEL_RESOURCE_ATTRIBUTES": "team=voice"},
        {"OTEL_SERVICE_NAME": "from-otel", "OTEL_EXPORTER_ZIPKIN_ENDPOINT":
         "http://127.0.0.1:9/api/v2/spans", "COSYVOICE_TRACED_EXPORTER": "console",
         "COSYVOICE_TRACED_ENVIRONMENT": "staging", "COSYVOICE_TRACED_DEBUG": "true"},
    ],
)
def test_same_child_environment_for_the_same_inputs(tmp_path: Path, inputs) -> None:
    env = app_env(**inputs)
    via_cli = child_env([str(BIN / "cosyvoice-traced"), "run", "--"], env, tmp_path / "a.json")
    via_sh = child_env([str(ROOT / "launch.sh")], env, tmp_path / "b.json")
    assert via_cli == via_sh
    # and both really configured tracing (not two identical no-ops)
    assert via_cli["OTEL_TRACES_EXPORTER"] in ("cosyvoice_zipkin", "console")
    assert "opentelemetry" in via_cli["PYTHONPATH"]


def test_kill_switch_is_the_same_for_both(tmp_path: Path) -> None:
    env = app_env(COSYVOICE_TRACED_TRACING="false")
    via_cli = child_env([str(BIN / "cosyvoice-traced"), "run", "--"], env, tmp_path / "a.json")
    via_sh = child_env([str(ROOT / "launch.sh")], env, tmp_path / "b.json")
    assert via_cli == via_sh
    assert not any(k.startswith("OTEL_TRACES") for k in via_cli)


@pytest.mark.parametrize(("args", "needle"), [([], "missing program"),
                                              (["nope_app.py"], "program not found")])
def test_launch_sh_bad_input_is_one_line_exit_2(args, needle) -> None:
    result = subprocess.run([str(ROOT / "launch.sh"), *args], env=app_env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and needle in result.stderr


def test_launch_sh_bad_variable_is_one_line_exit_2() -> None:
    result = subprocess.run([str(ROOT / "launch.sh"), "python", "-c", "pass"],
                            env=app_env(COSYVOICE_TRACED_EXPORTER="jaeger"), cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cosyvoice-traced: error: COSYVOICE_TRACED_EXPORTER: expected one of zipkin, otlp, "
        "console, none, zipkin-file, kafka, got 'jaeger'"]


ARGV = "import json, sys; json.dump(sys.argv, open(sys.argv[1], 'w'))"


@pytest.mark.parametrize("how", [["python", "-c", ARGV], ["-m", "tests.support.argv_dump"],
                                 ["tests/support/argv_dump.py"]])
def test_launch_sh_runs_the_program_python_resolved(tmp_path: Path, how) -> None:
    """The shell resolves nothing: `env -- PROGRAM` prints the program `run` would exec."""
    out = tmp_path / "argv.json"
    listing = subprocess.run([str(BIN / "cosyvoice-traced"), "env", "--", *how, str(out)],
                             env=app_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[-2].startswith(f"set -- {BIN / 'python'} ")
    assert lines[-1] == f"instrument={BIN / 'opentelemetry-instrument'}"
    for env in (app_env(), app_env(COSYVOICE_TRACED_TRACING="false")):
        out.unlink(missing_ok=True)
        result = subprocess.run([str(ROOT / "launch.sh"), *how, str(out)], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(out.read_text())[-1] == str(out)
