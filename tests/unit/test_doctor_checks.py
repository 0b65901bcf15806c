"""`doctor`'s checks in memory (issue 31: the generated mutants found these lines run by no
test, or only by an e2e test that never looks at the line they make): each check's verdict
and severity from the inputs that decide it. The whole command against a real app and Zipkin
is `tests/e2e/test_tools.py`."""

from __future__ import annotations

import os
import re
import sys

import pytest

from cosyvoice_otel.tools import doctor
from cosyvoice_otel.tools.doctor import FAIL, OK, WARN

from ..support.loopback_server import LoopbackServer, QuietHandler

PACKAGES = dict.fromkeys(doctor.OTEL_PACKAGES, "1.0")


def versions(monkeypatch, **given: str | None) -> None:
    table = {**PACKAGES, "opentelemetry-sdk": "1.45.0",
             "opentelemetry-instrumentation": "0.66b0", **{k.replace("_", "-"): v
                                                           for k, v in given.items()}}
    monkeypatch.setattr(doctor, "_version", table.get)


def test_an_unknown_distribution_has_no_version() -> None:
    assert doctor._version("no-such-distribution-anywhere") is None
    assert doctor._version("click") is not None


def test_packages_a_released_pair_is_quiet_a_missing_one_fails(monkeypatch) -> None:
    versions(monkeypatch)
    assert all(line.level == OK for line in doctor.check_packages())
    assert "release set" not in {line.what for line in doctor.check_packages()}
    versions(monkeypatch, opentelemetry_instrumentation="0.60b0")
    (mismatch,) = [line for line in doctor.check_packages() if line.what == "release set"]
    assert mismatch.level == WARN and "sdk 1.45.0 with instrumentation 0.60b0" in mismatch.detail
    versions(monkeypatch, opentelemetry_distro=None)
    (missing,) = [line for line in doctor.check_packages() if line.level == FAIL]
    assert (missing.what, missing.detail) == ("opentelemetry-distro", "not installed")


@pytest.mark.parametrize(("sdk", "inst", "paired"), [
    ("1.45.0", "0.66b0", True), ("1.45.1", "0.66b0", True), ("1.45.0", "0.65b0", False),
    ("1.46.0", "0.66b0", False), ("1", "0.66b0", True), ("1.45.0", "dev", True)])
def test_release_pairs(sdk, inst, paired) -> None:
    assert doctor._compatible(sdk, inst) is paired  # unreadable versions: no false alarm


def test_a_disabled_instrumentor_is_listed_as_skipped(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", " threading ,")
    lines = {line.what: line for line in doctor.check_instrumentors()}
    assert lines["threading instrumentor"].level == WARN
    assert "orphaned" in lines["threading instrumentor"].detail
    assert lines["instrumentors skipped"] == doctor.Line(OK, "instrumentors skipped",
                                                         "threading (disabled)")
    assert "threading" not in lines["instrumentors that load"].detail.split(", ")
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
    lines = {line.what: line for line in doctor.check_instrumentors()}
    assert lines["threading instrumentor"].level == OK and "instrumentors skipped" not in lines


@pytest.mark.parametrize(("version", "level", "detail"), [
    (None, OK, "not installed (FastAPI/gRPC servers only)"),
    ("5.4.0", OK, "5.4.0 (supported: 5.4.x, 6.x)"),
    ("6.1.0", OK, "6.1.0 (supported: 5.4.x, 6.x)"),
    ("5.3.0", WARN, "5.3.0 is not tested (supported: 5.4.x, 6.x)"),
    ("4.44.1", WARN, "4.44.1 is not tested (supported: 5.4.x, 6.x)")])
def test_gradio_versions(monkeypatch, version, level, detail) -> None:
    monkeypatch.setattr(doctor, "_version", {"gradio": version}.get)
    assert list(doctor.check_gradio()) == [doctor.Line(level, "gradio", detail)]


def _tree(root, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


def test_stage_map_against_a_source_tree_names_each_kind_of_gap(tmp_path, monkeypatch) -> None:
    # the CosyVoice API module without CosyVoice2, and CosyVoice without one of its methods;
    # the model module missing altogether. doctor also reads the working directory and
    # sys.path (a fork's own package): neither may hold another cosyvoice here (the demo
    # engine's folder is on sys.path after the engine tests)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path
                                      if not os.path.isdir(os.path.join(p or ".", "cosyvoice"))])
    root = _tree(tmp_path, {
        "cosyvoice/__init__.py": "",
        "cosyvoice/cli/__init__.py": "",
        "cosyvoice/cli/cosyvoice.py": "class CosyVoice:\n    def inference_sft(self):\n"
                                      "        pass\n",
    })
    lines = list(doctor.check_stage_map(root))
    items = {line.detail: line.level for line in lines if line.what == "stage target"}
    assert items["cosyvoice.cli.cosyvoice:CosyVoice2.inference_instruct2 (no class CosyVoice2)"] \
        == WARN  # a class a version does not have: that version is not installed here
    assert items["cosyvoice.cli.cosyvoice:CosyVoice.inference_zero_shot (no method "
                 "inference_zero_shot: renamed?)"] == FAIL
    assert any(detail.endswith("(no module cosyvoice.cli.model)") and level == FAIL
               for detail, level in items.items())
    assert not any("inference_sft" in detail and "CosyVoice." in detail for detail in items)
    assert (lines[-1].level, lines[-1].what) == (WARN, "stage map")
    assert re.fullmatch(rf"1 of \d+ targets found in {re.escape(root)}", lines[-1].detail)


MODEL_YAML = ("llm: !new:cosyvoice.llm.llm.TransformerLM\n"
              "hift: !new:cosyvoice.hifigan.generator.HiFTGenerator\n")


def test_a_model_config_without_a_part_fails_that_part(tmp_path) -> None:
    (tmp_path / "cosyvoice.yaml").write_text(MODEL_YAML)  # no flow line
    lines = list(doctor.check_model_dir(str(tmp_path), str(tmp_path)))
    flow = [line for line in lines if "'flow: !new:...'" in line.detail]
    assert [(line.level, line.what) for line in flow] == [(FAIL, "flow")]


class NotMetrics(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        body = b"# TYPE x counter\nx{le=\"1\" 2 3 4\n"
        self.reply(200, body)


def test_a_page_that_is_not_prometheus_text_fails_and_says_so() -> None:
    with LoopbackServer(NotMetrics, "/metrics") as server:
        lines = list(doctor.check_metrics(server.endpoint))
    assert len(lines) == 1 and lines[0].level == FAIL and lines[0].what == "tracer health"
    assert lines[0].detail.startswith(f"{server.endpoint} is not a Prometheus /metrics page (")


def test_a_metrics_url_with_a_password_is_shown_without_it() -> None:
    with LoopbackServer(NotMetrics, "/metrics") as server:
        url = server.endpoint.replace("http://", "http://scraper:s3cret@")
        lines = list(doctor.check_metrics(url))
    assert len(lines) == 1 and "s3cret" not in lines[0].detail
    assert lines[0].detail.startswith(f"http://***@127.0.0.1:{server.port}/metrics is not a "
                                      "Prometheus /metrics page")


def test_an_instrumentor_whose_dependencies_conflict_is_listed_as_skipped(monkeypatch) -> None:
    from opentelemetry.instrumentation import dependencies

    def conflicts(dist):
        return "fastapi >= 99 not installed" if dist.name.endswith("-fastapi") else None

    monkeypatch.setattr(dependencies, "get_dist_dependency_conflicts", conflicts)
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", raising=False)
    lines = {line.what: line for line in doctor.check_instrumentors()}
    assert lines["instrumentors skipped"].detail == "fastapi (fastapi >= 99 not installed)"
    assert "fastapi" not in lines["instrumentors that load"].detail.split(", ")


class NotJsonInfo(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        self.reply(200, b"<html>a proxy's page</html>", "text/html")


def test_a_zipkin_info_that_is_not_json_is_version_unknown() -> None:
    with LoopbackServer(NotJsonInfo, "/") as server:
        lines = list(doctor.check_zipkin(server.endpoint))
    assert lines[0] == doctor.Line(OK, "zipkin", f"{server.endpoint.rstrip('/')} answers, "
                                                  "version ?")


def test_a_class_nowhere_to_be_read_has_no_method() -> None:
    assert doctor._has_method({}, "Nowhere", "inference") is False
    looping = {"A": {"__base__:B"}, "B": {"__base__:A"}}  # a cycle ends at the depth bound
    assert doctor._has_method(looping, "A", "inference") is False


def test_a_method_is_found_on_a_base_named_by_its_module(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = _tree(tmp_path, {
        "fork/__init__.py": "",
        "fork/base.py": "class Base:\n    def inference(self):\n        pass\n",
        "fork/model.py": "import fork.base\n\nclass Model(fork.base.Base):\n    pass\n",
    })
    assert doctor.find_method("fork.model", "Model", "inference", [root]) == "fork.base:Base"
    assert doctor.find_method("fork.model", "Model", "absent", [root]) is None


def test_without_a_path_the_source_is_read_where_cosyvoice_imports_from(monkeypatch) -> None:
    import importlib

    examples = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
    monkeypatch.syspath_prepend(os.path.abspath(examples))
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("cosyvoice")
    expected = os.path.dirname(list(spec.submodule_search_locations)[0])
    roots = doctor._roots(None)
    assert roots[0] == expected and roots[1] == os.getcwd()
    assert doctor._roots("/given")[0] == "/given"
