"""The instrumentor's stage rows without an engine (issue 31: lines the generated mutants
found unguarded): a stage file's declarations reach the schema when the process instruments,
an optional target that is missing says nothing above debug, a required one warns once, a
target that cannot be patched is one warning naming it."""

from __future__ import annotations

import logging
import textwrap

from opentelemetry.sdk.trace import TracerProvider

from cosyvoice_otel import schema
from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
from cosyvoice_otel.instrumentation.stage_map import Stage

PROVIDER = TracerProvider()


def instrument(**kwargs) -> CosyVoiceInstrumentor:
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=PROVIDER, **kwargs)
    return inst


def test_a_stage_files_declarations_are_known_once_the_process_instruments(tmp_path) -> None:
    stage_file = tmp_path / "stages.toml"
    stage_file.write_text(textwrap.dedent("""
        [[declare]]
        span = "watermark"
        meaning = "the watermark step"

        [[reason]]
        name = "watermark_failed"
        meaning = "the watermark could not be applied"
    """))
    assert not schema.known_stage("watermark") and not schema.known_reason("watermark_failed")
    inst = instrument(stage_map=str(stage_file))
    try:
        assert schema.known_stage("watermark") and schema.known_reason("watermark_failed")
    finally:
        inst.uninstrument()


def messages(caplog, part: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if part in r.getMessage()
            and r.levelno >= logging.INFO]


def test_an_optional_missing_target_is_silent_a_required_one_warns_once(caplog) -> None:
    rows = [Stage("cosyvoice_otel.urls", "Nowhere.optional_one", "opt", optional=True),
            Stage("cosyvoice_otel.urls", "Nowhere.required_one", "req")]
    with caplog.at_level(logging.DEBUG, logger="cosyvoice_otel"):
        inst = instrument(stages=rows)
        inst.uninstrument()
    assert messages(caplog, "optional_one") == []
    (warning,) = messages(caplog, "required_one")
    assert warning == ("cosyvoice-otel: stage target cosyvoice_otel.urls:Nowhere.required_one "
                       "not found; that stage will have no span")


def test_a_target_that_cannot_be_patched_is_one_warning_naming_it(caplog, monkeypatch) -> None:
    def refuse(self, owner, attr, row):
        raise TypeError("read-only")

    monkeypatch.setattr(CosyVoiceInstrumentor, "_patch_target", refuse)
    rows = [Stage("cosyvoice_otel.urls", "shown", "shown_stage")]
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        inst = instrument(stages=rows)
        inst.uninstrument()
    assert messages(caplog, "cosyvoice_otel.urls:shown") == [
        "cosyvoice-otel: stage target cosyvoice_otel.urls:shown could not be patched "
        "(TypeError: read-only)"]


def test_a_static_method_target_is_refused_with_one_warning(caplog) -> None:
    from cosyvoice_otel.sdk.spool import Spool

    before = Spool.__dict__["claim"]
    rows = [Stage("cosyvoice_otel.sdk.spool", "Spool.claim", "claim_stage")]
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        inst = instrument(stages=rows)
        try:
            assert Spool.__dict__["claim"] is before  # left as it is
        finally:
            inst.uninstrument()
    assert messages(caplog, "Spool.claim") == [
        "cosyvoice-otel: stage target cosyvoice_otel.sdk.spool:Spool.claim is a static/class "
        "method; not supported"]
