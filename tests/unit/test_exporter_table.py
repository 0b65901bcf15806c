"""The exporter table (settings.EXPORTER_TABLE): one row per ``--exporter`` value, read by the
option, the child environment, the configurator and the launcher's checks. Each test runs over
every row, so a row added later is checked by the same tests."""

from __future__ import annotations

import importlib.metadata
import inspect
import os

import pytest
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace.export import SpanExporter

from cosyvoice_otel import settings as table
from cosyvoice_otel.launcher import child_env
from cosyvoice_otel.sdk import configurator
from cosyvoice_otel.sdk.redaction import RedactingSpanExporter

ROWS = table.EXPORTER_TABLE
OURS = [row for row in ROWS if row.target]
SDKS = [row for row in ROWS if not row.target]


def test_the_option_and_the_otel_names_come_from_the_table() -> None:
    assert table.EXPORTERS == tuple(row.name for row in ROWS)
    assert table.OTEL_EXPORTER_NAMES == {
        name: row.name for row in ROWS for name in (row.otel_name, *row.aliases)}
    option = table.OPTIONS_BY_NAME["exporter"]
    for row in ROWS:
        assert f"{row.name} ({row.help})" in option.help
        assert option.parse(row.name.upper()) == row.name
        # pure environment configuration: what the launcher renders reads back as the row
        assert table.Settings.resolve({}, {"OTEL_TRACES_EXPORTER": row.otel_name}).exporter \
            == row.name
    with pytest.raises(ValueError, match="expected one of zipkin, otlp"):
        option.parse("jaeger")


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_the_child_environment_is_the_rows(row) -> None:
    chosen = table.Settings.resolve({"exporter": row.name}, {})
    env = child_env.render(chosen, {})
    assert env["OTEL_TRACES_EXPORTER"] == row.otel_name
    assert env["COSYVOICE_TRACED_EXPORTER"] == row.name
    for key, value in (row.env(chosen) if row.env else {}).items():
        assert env[key] == value


@pytest.mark.parametrize("row", SDKS, ids=lambda row: row.name)
def test_the_sdks_own_exporters_are_installed_entry_points(row) -> None:
    if row.otel_name == "none":
        return
    (entry,) = importlib.metadata.entry_points(group="opentelemetry_traces_exporter",
                                               name=row.otel_name)
    assert issubclass(entry.load(), SpanExporter)
    assert row.args is None  # the SDK builds it from the variables, never with our arguments


@pytest.mark.parametrize("row", OURS, ids=lambda row: row.name)
def test_ours_are_built_from_the_settings_alone(row, tmp_path, monkeypatch) -> None:
    """Each exporter takes its arguments from the row and never reads ``current()``: the
    settings are resolved once, by the configurator, and handed down."""
    chosen = table.Settings.resolve({"exporter": row.name, "spool_dir": str(tmp_path),
                                     "zipkin_file": str(tmp_path / "t.json"),
                                     "kafka_bootstrap_servers": "127.0.0.1:9"}, {})

    def no_current() -> None:
        raise AssertionError("an exporter read current()")

    monkeypatch.setattr(table, "current", no_current)
    module, _, name = row.target.partition(":")
    exporter_class = getattr(importlib.import_module(module), name)
    assert issubclass(exporter_class, SpanExporter)
    args = row.args(chosen) if row.args else {}
    inspect.signature(exporter_class).bind(**args)  # every argument is one it takes
    required = {p.name for p in inspect.signature(exporter_class).parameters.values()
                if p.default is inspect.Parameter.empty}
    assert required <= set(args)  # and none it needs is left to a fallback
    exporter = configurator.build_exporter(row, chosen)
    try:
        assert type(exporter) is exporter_class
    finally:
        exporter.shutdown()


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_the_configurator_builds_the_chosen_row(row, tmp_path, process_settings,
                                                monkeypatch) -> None:
    """Ours reach the SDK as an export processor behind redaction, with the SDK told "none";
    the SDK's own are left to the SDK by name. The app's environment is given back as it was."""
    process_settings({"COSYVOICE_TRACED_EXPORTER": row.name, "OTEL_TRACES_EXPORTER": "console",
                      "COSYVOICE_TRACED_SPOOL_DIR": str(tmp_path),
                      "COSYVOICE_TRACED_ZIPKIN_FILE": str(tmp_path / "t.json"),
                      "COSYVOICE_TRACED_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
                      "COSYVOICE_TRACED_METRICS": "none"})
    seen: dict = {}

    def sdk(self, **kwargs) -> None:
        seen["names"] = os.environ["OTEL_TRACES_EXPORTER"]
        seen["processors"] = kwargs.get("span_processors") or []

    monkeypatch.setattr(_OTelSDKConfigurator, "_configure", sdk)
    monkeypatch.setattr(configurator.lifecycle, "install", lambda *a: None)
    configurator.CosyVoiceConfigurator()._configure()
    assert os.environ["OTEL_TRACES_EXPORTER"] == "console"
    if not row.target:
        assert seen == {"names": row.otel_name, "processors": []}
        return
    assert seen["names"] == "none"
    (processor,) = seen["processors"]
    redacting = processor.span_exporter
    assert isinstance(redacting, RedactingSpanExporter)
    assert row.target.endswith(":" + type(redacting.inner).__name__)
    processor.shutdown()


def test_an_exporter_that_cannot_be_built_is_one_warning(process_settings, monkeypatch,
                                                         caplog) -> None:
    process_settings({"COSYVOICE_TRACED_EXPORTER": "zipkin-file",
                      "COSYVOICE_TRACED_METRICS": "none"})
    monkeypatch.setitem(table.EXPORTERS_BY_NAME, "zipkin-file", table.EXPORTERS_BY_NAME[
        "zipkin-file"]._replace(target="cosyvoice_otel.sdk.no_such_module:Exporter"))
    called: list[bool] = []
    monkeypatch.setattr(_OTelSDKConfigurator, "_configure", lambda self, **kw: called.append(True))
    configurator.CosyVoiceConfigurator()._configure()
    assert called == []  # no SDK set up half-way
    (line,) = [r.getMessage() for r in caplog.records if r.name == "cosyvoice_otel"]
    assert line.startswith("cosyvoice-otel: tracing is off: the zipkin-file exporter could not "
                           "be set up (ModuleNotFoundError: ")
