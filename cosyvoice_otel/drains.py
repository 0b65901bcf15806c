"""Work the process must finish before it exits on SIGTERM, beside the exporters' queues.

The instrumentation registers it (the GPU timer's resolver, ``instrumentation/gpu_timing.py``);
the SDK side's SIGTERM flush (``sdk/lifecycle.py``) drains it. It lives on the ground floor so
that neither room imports the other.
"""

from __future__ import annotations

from collections.abc import Callable

# each takes the seconds it may wait at most (what it returns is not read)
DRAINS: list[Callable[[float], object]] = []


def register(drain: Callable[[float], object]) -> None:
    if drain not in DRAINS:
        DRAINS.append(drain)


def drain_all(seconds: float) -> None:
    for drain in list(DRAINS):
        drain(seconds)
