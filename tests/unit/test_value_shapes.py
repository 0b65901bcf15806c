"""Value shapes the first generated-mutant run found untested (tests/support/statement_mutants.py):
an upload's file name and a model's fields among a request's values; attribute values of a
``str`` subclass, an ``IntEnum`` or a numpy scalar through the redactor."""

from __future__ import annotations

import dataclasses
import enum

import numpy as np
import pytest
from pydantic import BaseModel

from cosyvoice_otel import masking
from cosyvoice_otel.sdk.redaction import MASK, Redactor


class Upload:
    """What FastAPI hands an endpoint for a file field (``UploadFile``): its name is the
    client's."""

    def __init__(self, filename) -> None:
        self.filename = filename
        self.file = object()


class Form(BaseModel):
    text: str
    speed: float = 1.0


@dataclasses.dataclass
class Settings:
    voice: str


def test_the_texts_of_uploads_models_and_dataclasses() -> None:
    found = masking.texts_in([Upload("bob_secret_voice.wav"), Upload(None),
                              Form(text="model text here"), Settings("dataclass voice"),
                              object(), {"k": b"bytes text"}, [3, None, 2.5]])
    assert found == ["bob_secret_voice.wav", "model text here", "dataclass voice",
                     "bytes text"]


def test_an_objects_own_attributes_are_not_texts_unless_it_is_a_model() -> None:
    class Plain:
        def __init__(self) -> None:
            self.note = "not a request value"

    assert masking.texts_in([Plain()]) == []


class Voice(str):
    pass


class Mode(enum.IntEnum):
    SFT = 1


@pytest.mark.parametrize(("value", "expected"), [
    (Voice("say the secret word"), f"say the {MASK} word"),  # a str subclass: text, masked
    (Mode.SFT, 1),  # an IntEnum: its plain number
    (np.float64(0.25), 0.25),  # a numpy float (a float subclass): its plain number
    (np.bool_(True), True),  # not a bool subclass: its plain value
])
def test_subclasses_of_the_plain_types(value, expected) -> None:
    masking.remember(7, ["secret"])
    out = Redactor()._value("app.value", value, masking.pattern_for(7), False, None)
    assert out == expected and type(out) is type(expected)


def test_a_bad_name_is_shown_in_its_warning_with_only_the_request_text_masked(caplog) -> None:
    """The warning names the bad stage (the operator's lead to the line of code) and masks
    only what the request sent (a generated mutant that masked the whole name survived)."""
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    import cosyvoice_otel
    from cosyvoice_otel.instrumentation import api

    from ..support.tracing import stage_options

    provider = TracerProvider()
    api.activate(provider, stage_options())
    api._WARNED.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
            with provider.get_tracer("t").start_as_current_span("request") as request:
                masking.remember(request.get_span_context().trace_id, ["secret words here"])
                with cosyvoice_otel.stage("Bad Step secret words here"):
                    pass
    finally:
        api.deactivate()
        api._WARNED.clear()
    (line,) = [r.getMessage() for r in caplog.records if "bad stage name" in r.getMessage()]
    assert f"'Bad Step {MASK}'" in line and "secret" not in line


def test_an_exit_that_finds_no_entry_of_its_own_or_fails_never_raises(monkeypatch) -> None:
    """A stage object exited from another thread (no entry of its own there) or whose
    bookkeeping fails: nothing reaches the app (two generated mutants survived here)."""
    import threading

    from opentelemetry.sdk.trace import TracerProvider

    import cosyvoice_otel
    from cosyvoice_otel import errors
    from cosyvoice_otel.instrumentation import api

    from ..support.tracing import stage_options

    provider = TracerProvider()
    api.activate(provider, stage_options())
    try:
        shared = cosyvoice_otel.stage("shared_step")
        with provider.get_tracer("t").start_as_current_span("request"):
            assert shared.__enter__() is not None
        raised: list[BaseException] = []

        def other_thread() -> None:
            try:
                shared.__exit__(None, None, None)  # not its entry: nothing to close here
            except BaseException as exc:  # noqa: BLE001
                raised.append(exc)

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert raised == [] and len(shared._open) == 1
        before = errors.ERRORS.get("stage exit", 0)
        monkeypatch.setattr(api.stage, "_pop", lambda self: 1 / 0)
        shared.__exit__(None, None, None)  # its bookkeeping fails: counted, not raised
        assert errors.ERRORS["stage exit"] == before + 1
    finally:
        api.deactivate()


def test_gradio_inputs_that_cannot_be_read_leave_the_event_span_whole() -> None:
    """An event whose inputs raise when read: counted, and its gradio.event span still
    opens and ends around the handler."""
    import asyncio

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cosyvoice_otel import errors
    from cosyvoice_otel.instrumentation import gradio_bridge

    class Hostile:
        @property
        def data(self):
            raise RuntimeError("inputs unreadable")

    class Event:
        data = Hostile()

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("join"):
        event = Event()
        setattr(event, gradio_bridge.CTX_ATTR,
                trace.set_span_in_context(trace.get_current_span()))
    seen = []

    async def process(events):
        seen.append(trace.get_current_span().name)
        return "done"

    before = errors.ERRORS.get("gradio event inputs", 0)
    wrapper = gradio_bridge.process_events(tracer, lambda: True)
    assert asyncio.run(wrapper(process, None, ([event],), {})) == "done"
    assert seen == ["gradio.event"] and errors.ERRORS["gradio event inputs"] == before + 1
    assert [s.name for s in memory.get_finished_spans()].count("gradio.event") == 1


def test_a_value_that_raises_when_read_is_one_placeholder_not_a_lost_batch() -> None:
    from collections.abc import Mapping

    class Hostile(Mapping):
        def __getitem__(self, key):
            raise KeyError(key)

        def __iter__(self):
            raise RuntimeError("cannot be read")

        def __len__(self) -> int:
            return 1

    redactor = Redactor()
    out = redactor._attributes({"ok": "fine", "bad": Hostile()}, None)
    assert out == {"ok": "fine", "bad": "[unencodable Hostile]"}
    assert redactor.placeholders == 1
