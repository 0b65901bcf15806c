"""One log line per streak (sdk/export_base.StreakLog): the first event of a kind is written,
the same kind within the interval only counted, and the next line says how many spans went
by since the last one."""

from __future__ import annotations

import logging

import pytest

from cosyvoice_otel.sdk import export_base
from cosyvoice_otel.sdk.export_base import StreakLog

from ..support.helpers import FakeClock, fake_monotonic


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    return fake_monotonic(monkeypatch, export_base)


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("cosyvoice_otel")]


def test_a_streak_is_one_line_then_one_per_interval_with_the_count(clock, caplog) -> None:
    log = StreakLog(interval=10.0)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        log.note("away", 3, "Zipkin away")
        clock.now += 4
        log.note("away", 2, "Zipkin away")
        log.note("away", 4, "Zipkin away")
        assert lines(caplog) == ["cosyvoice-otel: Zipkin away"]
        clock.now += 6  # exactly the interval since the first line: a new line
        log.note("away", 1, "Zipkin away")
        assert lines(caplog)[-1] == ("cosyvoice-otel: Zipkin away (6 more spans since the last "
                                     "such line)")
        clock.now += 1
        log.note("back", 5, "Zipkin back")  # another kind: at once, no count of the other
        assert lines(caplog)[-1] == "cosyvoice-otel: Zipkin back"
        clock.now += 20
        log.note("back", 1, "Zipkin back")  # nothing counted since: no count in the line
        assert lines(caplog)[-1] == "cosyvoice-otel: Zipkin back"
    assert len(lines(caplog)) == 4

