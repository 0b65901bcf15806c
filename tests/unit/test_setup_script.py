"""`.ci/setup`, the quick start's two commands: its options and its one-line-per-step helper.

(Running the whole script here would reinstall the venv the tests run in; CI runs it whole:
``.ci/run``.)"""

from __future__ import annotations

import re
import subprocess

from ..support.helpers import ROOT

SETUP = ROOT / ".ci" / "setup"


def step_function() -> str:
    match = re.search(r"^step\(\) \{.*?^\}\n", SETUP.read_text(), re.S | re.M)
    assert match, "no step() in .ci/setup"
    return match.group(0)


def run_steps(script: str) -> subprocess.CompletedProcess[str]:
    program = f'set -euo pipefail\nLOG=$(mktemp)\n{step_function()}\n{script}\n'
    return subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60)


def test_an_unknown_option_is_one_line_and_exit_2() -> None:
    result = subprocess.run(["bash", str(SETUP), "--everything"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "setup: unknown option --everything (expected --demo or nothing)\n"


def test_a_step_is_one_line_and_hides_its_own_output() -> None:
    result = run_steps('chatty() { echo "pip says a lot"; echo "more" >&2; }\n'
                       'step "the venv" chatty\nstep "the jar" true')
    assert result.returncode == 0
    assert re.fullmatch(r"setup: the venv \(\d+ s\)\nsetup: the jar \(\d+ s\)\n", result.stdout)
    assert result.stderr == ""


def test_a_step_whose_middle_command_fails_fails_with_its_last_lines() -> None:
    """Under `if`, bash ignores `set -e`: a failing first command followed by a passing one
    would pass. The step must stop at the first failure and show why."""
    result = run_steps('two() { echo "downloading"; false; echo "never"; }\n'
                       'step "the venv" two\necho "not reached"')
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "setup: the venv FAILED (exit 1); its last lines:\ndownloading\n"


def test_the_demo_mode_sets_up_only_what_the_demo_needs() -> None:
    """The first command stays short: the demo's venv and the Zipkin jar, then it stops."""
    text = SETUP.read_text()
    demo = re.search(r'^if \[ "\$MODE" = demo \]; then\n(.*?)^fi\n', text, re.S | re.M)
    assert demo is not None
    steps = re.findall(r'step "([^"]+)"', demo.group(1))
    assert steps == [".venv (the demo's deps: torch, Gradio 6.x, OpenTelemetry)",
                     "Zipkin server jar (Maven Central)"]
    assert "exit 0" in demo.group(1)
    assert text.index('if [ "$MODE" = demo ]') < text.index('step "Debian')
