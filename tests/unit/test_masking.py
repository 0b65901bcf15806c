"""The per-request text registry's bookkeeping (``cosyvoice_otel.masking``): pins held by
keep-errors keep a trace's masks through the registry's bound, counted per holder; the app's
declared query names merge per route and stay bounded."""

from __future__ import annotations

import pytest

from cosyvoice_otel import masking


@pytest.fixture(autouse=True)
def small_registry(monkeypatch):
    masking.forget_all()
    monkeypatch.setattr(masking, "MAX_TRACES", 3)
    yield
    masking.forget_all()


def flood(start: int = 100, count: int = 5) -> None:
    """More traces than the registry keeps: the oldest unpinned ones go."""
    for trace_id in range(start, start + count):
        masking.remember(trace_id, ["other text"])


# (pins, unpins) -> whether trace 1 keeps its masks through a flood
@pytest.mark.parametrize(("pins", "unpins", "kept"), [
    (0, 0, False),
    (1, 0, True),
    (1, 1, False),
    (2, 1, True),   # two holders: one done, the other may still export it
    (2, 2, False),
    (3, 1, True),
])
def test_pins_are_counted_per_holder(pins, unpins, kept) -> None:
    masking.remember(1, ["secret words"])
    for _ in range(pins):
        masking.pin(1)
    for _ in range(unpins):
        masking.unpin(1)
    flood()
    assert masking.known(1) is kept


def test_unpinning_a_trace_nobody_pinned_is_harmless() -> None:
    masking.remember(1, ["secret words"])
    masking.unpin(1)  # no KeyError, no negative count
    masking.pin(1)
    flood()
    assert masking.known(1)  # one pin after the stray unpin still holds it


def test_an_unpinned_trace_lives_on_as_the_newest() -> None:
    masking.remember(1, ["secret words"])
    masking.pin(1)
    flood(count=5)
    masking.unpin(1)
    masking.remember(200, ["more"])  # one over the bound: the oldest unpinned goes, not 1
    assert masking.known(1)


def test_declared_query_names_merge_per_route_and_stay_bounded(monkeypatch) -> None:
    monkeypatch.setattr(masking, "_declared", {})
    monkeypatch.setattr(masking, "MAX_ROUTES", 1)
    masking.declare_query_names("/a", ["x"])
    masking.declare_query_names("/a", ["y"])  # a known route grows even when full
    masking.declare_query_names("/b", ["z"])  # a new one is refused when full
    assert masking.declared_query_names("/a") == {"x", "y"}
    assert masking.declared_query_names("/b") == frozenset()
    assert masking.declared_query_names(None) == frozenset()
