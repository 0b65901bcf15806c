"""`doctor`'s remaining verdicts on a source tree written here (issue 31: lines only the e2e
doctor runs took): a model directory with no config, a part traced by the user's own --stage
row, a class imported from another module, no Zipkin given, no cosyvoice to read, and the
checks `run_doctor` puts together."""

from __future__ import annotations

import os
import sys

import pytest

from cosyvoice_otel.instrumentation.stage_map import parse_stage_spec
from cosyvoice_otel.tools import doctor
from cosyvoice_otel.tools.doctor import FAIL, OK, WARN

from .test_doctor_checks import _tree


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No other cosyvoice on sys.path or in the working directory (doctor reads both)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path
                                      if not os.path.isdir(os.path.join(p or ".", "cosyvoice"))])
    return tmp_path


FORK = {
    "cosyvoice/__init__.py": "",
    "cosyvoice/cli/__init__.py": "",
    "cosyvoice/cli/model.py": "class CosyVoice3Model:\n    def token2wav(self):\n        pass\n",
    "cosyvoice/llm/__init__.py": "",
    # the LLM class is defined elsewhere and imported: doctor follows the import
    "cosyvoice/llm/llm.py": "from cosyvoice.llm.impl import Qwen2LM as Qwen2LM\n",
    "cosyvoice/llm/impl.py": "class Qwen2LM:\n    def inference(self):\n        pass\n",
    "cosyvoice/flow/__init__.py": "",
    "cosyvoice/flow/flow.py": "class Flow:\n    def forward_only(self):\n        pass\n",
    "cosyvoice/hift/__init__.py": "",
    "cosyvoice/hift/hift.py": "class HiFT:\n    def inference(self):\n        pass\n",
}
CONFIG = ("llm: !new:cosyvoice.llm.llm.Qwen2LM\nflow: !new:cosyvoice.flow.flow.Flow\n"
          "hift: !new:cosyvoice.hift.hift.HiFT\n")


def test_a_model_dir_without_a_config_is_one_failure(isolated) -> None:
    lines = list(doctor.check_model_dir(str(isolated), str(isolated)))
    assert lines == [doctor.Line(FAIL, "model config", "none of cosyvoice.yaml, "
                                 f"cosyvoice2.yaml, cosyvoice3.yaml in {isolated}")]


def test_a_model_dirs_parts_found_followed_or_named_by_the_users_stage(isolated) -> None:
    root = _tree(isolated / "src", FORK)
    model = isolated / "model"
    model.mkdir()
    (model / "cosyvoice3.yaml").write_text(CONFIG)
    flow_row = parse_stage_spec("flow=cosyvoice.flow.flow:Flow.forward_only")
    lines = {line.what: line for line in doctor.check_model_dir(str(model), root, (flow_row,))}
    assert lines["model.tts/token2wav"].level == OK
    # imported from impl.py: found where it is defined
    assert lines["acoustic_model"] == doctor.Line(
        OK, "acoustic_model", "Qwen2LM.inference (defined by cosyvoice.llm.impl:Qwen2LM) traced "
        "by the llm role")
    assert lines["flow"] == doctor.Line(
        OK, "flow", "traced by --stage flow=cosyvoice.flow.flow:Flow.forward_only")
    assert lines["vocoder"].level == OK
    without = {line.what: line for line in doctor.check_model_dir(str(model), root)}
    assert without["flow"].level == FAIL and "has no inference() method" in without["flow"].detail


def test_imports_are_read_by_name_and_alias(isolated) -> None:
    path = isolated / "m.py"
    path.write_text("import os\nfrom a.b import C, D as E\nfrom . import rel\n")
    # a relative import names no module to follow: left out
    assert doctor._imports(str(path)) == {"C": ("a.b", "C"), "E": ("a.b", "D")}


def test_without_zipkin_or_cosyvoice_those_checks_say_what_they_skipped(isolated,
                                                                        monkeypatch) -> None:
    assert list(doctor.check_zipkin(None)) == [
        doctor.Line(WARN, "zipkin", "no --zipkin given: not checked")]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cosyvoice" else real(name, *a))
    (line,) = doctor.check_stage_map(None)
    assert (line.level, line.what) == (WARN, "stage map")
    assert line.detail.startswith("cosyvoice is not importable here; give --cosyvoice-path")


def test_run_doctor_runs_each_check_with_its_own_arguments(monkeypatch) -> None:
    calls: list[tuple] = []

    def check(name):
        def run(*args):
            calls.append((name, args))
            return iter([doctor.Line(OK, name, "ok")])
        return run

    for name in ("check_packages", "check_instrumentors", "check_gradio", "check_zipkin",
                 "check_stage_map", "check_model_dir", "check_metrics"):
        monkeypatch.setattr(doctor, name, check(name))
    rows = (parse_stage_spec("x=a.b:C.d"),)
    lines = doctor.run_doctor("http://z", "/src", "/model", rows, "http://m/metrics")
    assert [line.what for line in lines] == [
        "check_packages", "check_instrumentors", "check_gradio", "check_zipkin",
        "check_stage_map", "check_model_dir", "check_metrics"]
    assert dict(calls)["check_zipkin"] == ("http://z",)
    assert dict(calls)["check_stage_map"] == ("/src", rows)
    assert dict(calls)["check_model_dir"] == ("/model", "/src", rows)
    assert dict(calls)["check_metrics"] == ("http://m/metrics",)
    calls.clear()
    doctor.run_doctor(None, None)
    assert [name for name, _ in calls] == ["check_packages", "check_instrumentors",
                                           "check_gradio", "check_zipkin", "check_stage_map"]
