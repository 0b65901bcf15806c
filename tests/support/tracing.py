"""The in-memory tracing rig of the unit tests: one TracerProvider with the SDK's in-memory
exporter (the ``memory`` fixture in tests/conftest.py), and the stage options the wrappers
read, with test defaults."""

from __future__ import annotations

import dataclasses
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cosyvoice_otel.instrumentation.options import Options


class Memory:
    """A provider whose finished spans land in memory, synchronously."""

    def __init__(self, service: str = "unit", sampler: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        kwargs = {"sampler": sampler} if sampler is not None else {}
        self.provider = TracerProvider(resource=Resource({"service.name": service}), **kwargs)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("cosyvoice_otel")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]


DEFAULT_OPTIONS = Options(stage_spans=True, gradio_bridge=True, cuda_sync=False,
                          max_text_chars=0, max_prompt_seconds=0.0, hash_salt=None)


def stage_options(**overrides: Any) -> Options:
    """The options a StageSpan reads, with tests' defaults (no limits, no metrics)."""
    return dataclasses.replace(DEFAULT_OPTIONS, **overrides)


def finished_spans(count: int, size: int = 40) -> list[ReadableSpan]:
    """``count`` ended spans of ``count`` traces (one root each, attribute ``p`` of ``size``
    characters): a batch for the exporters' tests."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "unit"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(count):
        with tracer.start_as_current_span(f"s{i}") as span:
            span.set_attribute("p", "x" * size)
    return list(memory.get_finished_spans())
