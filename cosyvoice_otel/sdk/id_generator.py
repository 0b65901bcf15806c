"""Span and trace ids that the app's seeding cannot repeat.

The SDK's default ``RandomIdGenerator`` draws from Python's GLOBAL ``random`` module. CosyVoice's
webui calls ``set_all_random_seed(seed)`` (``random.seed``) on every request, so with the
default generator every request made after seeding gets the SAME span ids: Zipkin then merges
spans of different requests and even builds parent cycles. This generator owns a private
``random.Random`` seeded from ``os.urandom`` (re-seeded in a forked child, so pre-fork workers
differ too). ``cosyvoice-traced`` selects it with ``OTEL_PYTHON_ID_GENERATOR=cosyvoice_otel``.
"""

from __future__ import annotations

import os
import random

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator

_rng = random.Random(os.urandom(32))


def _reseed() -> None:
    _rng.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


class IsolatedRandomIdGenerator(IdGenerator):
    def generate_span_id(self) -> int:
        span_id = _rng.getrandbits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = _rng.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = _rng.getrandbits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = _rng.getrandbits(128)
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True
