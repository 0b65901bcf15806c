"""The tools read what Zipkin (or something posing as it) answers: they must neither crash on a
span Zipkin stored without a name, times or tags, nor believe an answer to another question.
And report's --compare verdict follows its stated rule, at its boundaries."""

from __future__ import annotations

import pytest

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools import report as rep
from cosyvoice_otel.tools import verify
from cosyvoice_otel.tools.checks import check_synthesis
from cosyvoice_otel.tools.zipkin import ZipkinError, normalize

TRACE = "a" * 32


def inference(**tags: str) -> dict:
    return {"traceId": TRACE, "id": "1", "name": s.INFERENCE, "timestamp": 10, "duration": 5,
            "tags": {s.MODE: "sft", **tags}}


@pytest.mark.parametrize("span", [
    {"traceId": TRACE, "id": "2", "parentId": "1"},  # no name (Zipkin omits an empty one)
    {"traceId": TRACE, "id": "2", "name": None, "timestamp": "soon", "duration": None},
    {"traceId": TRACE, "id": "2", "name": "vocoder", "tags": "not a dict"},
    {"traceId": TRACE, "id": "2", "name": "vocoder", "tags": {"k": 1}, "parentId": 7},
    {"id": "2"},  # no trace id at all
    {"name": "x", "duration": True},  # a boolean is no duration
])
def test_report_and_checks_take_any_span_zipkin_stored(span) -> None:
    spans = [inference(), span, "not a span", 42]
    groups = rep.analyse([spans])
    assert groups["all"].requests  # the request is still counted
    problems = check_synthesis(spans, "sft", False)
    assert isinstance(problems, list) and problems  # judged incomplete, not a crash


def test_normalize_gives_every_span_the_fields_the_tools_read() -> None:
    (span,) = normalize([{"traceId": "ABC", "timestamp": 5.5, "tags": {"n": 3},
                          "kind": 1, "parentId": None}])
    assert span == {"traceId": "abc", "id": "", "name": "", "timestamp": 5.5, "duration": 0,
                    "tags": {"n": "3"}, "kind": None}
    with pytest.raises(ZipkinError, match="expected a list of spans, got dict"):
        normalize({"not": "a list"})


def sent(bad: bool = False) -> verify.Sent:
    return verify.Sent(TRACE, "b3multi", "sft", False, "CANARYX", bad=bad)


def test_verify_fails_a_zipkin_that_answers_with_another_trace() -> None:
    other = [dict(inference(), traceId="b" * 32)]
    checks = verify._check_one(sent(), other)
    assert [c.ok for c in checks] == [False]
    assert "another trace" in checks[0].reason


def test_verify_accepts_the_64_bit_form_of_the_id_it_sent() -> None:
    short = [dict(inference(), traceId=TRACE[16:])]
    assert verify._check_one(sent(), short)[0].ok


@pytest.mark.parametrize(("reason", "ok"), [("text_too_long", True), ("KeyError", False),
                                            ("anything at all", False), ("", False)])
def test_verify_wants_the_schemas_reason_for_its_bad_input(reason, ok) -> None:
    span = inference(**{"error": "x", s.ERROR_TYPE: reason} if reason else {"error": "x"})
    checks = verify._check_one(sent(bad=True), normalize([span]))
    error_check = next(c for c in checks if c.name.endswith("error tag and reason"))
    assert error_check.ok is ok
    assert verify.BAD_INPUT_REASON in s.ERROR_REASONS


# ----------------------------------------------------------------- --compare: its stated rule

def stats(values: list[float]) -> rep.StageStats:
    return rep.StageStats("vocoder", sorted(values))


def test_a_large_median_shift_without_significance_is_no_change() -> None:
    """Medians 33% apart, but the samples overlap: p >= 0.05, so no verdict (without the p
    rule this would read "slower")."""
    a, b = [1, 2, 3, 100, 101], [2, 3, 4, 102, 103]
    row = rep.StageComparison("vocoder", stats(a), stats(b))
    assert row.delta("p50") == pytest.approx(1 / 3)
    assert row.p_value >= rep.ALPHA
    assert row.verdict == "no significant change"


@pytest.mark.parametrize(("n_a", "n_b", "verdict"), [
    (5, 5, "slower"),  # exactly the minimum a side: a verdict (p = 0.0122)
    (4, 5, "too few samples"), (5, 4, "too few samples"), (4, 4, "too few samples")])
def test_five_samples_a_side_is_the_boundary(n_a, n_b, verdict) -> None:
    a = [100 + i for i in range(n_a)]
    b = [200 + i for i in range(n_b)]
    assert rep.StageComparison("vocoder", stats(a), stats(b)).verdict == verdict
