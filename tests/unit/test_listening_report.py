"""`report`'s listener figures from traces (tools/listening.py): the paired test against
scipy's, pairing by fingerprint, the first-chunk table, the playback line, and the options that
do not combine."""

from __future__ import annotations

import json
import random
import subprocess

import pytest
from scipy.stats import wilcoxon

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools import listening as lis

from ..support.helpers import BIN, app_env

rng = random.Random(7)


@pytest.mark.parametrize("differences", [
    [1, 2, 3, 4, 5, 6, 7],                     # all one way: exact 2/128
    [5, -1, 2, 3, 4, 6, 7],
    [1, 2, -3, 4, -5, 6, 7, 8, 9, 10],
    [0.5, -0.25, 3.5],
    [rng.gauss(0.2, 1) for _ in range(50)],    # the exact test's largest n
])
def test_the_exact_paired_test_is_scipys(differences) -> None:
    assert lis.wilcoxon_p(differences) == pytest.approx(
        wilcoxon(differences, method="exact").pvalue, rel=1e-9)


@pytest.mark.parametrize("differences", [
    [1, 1, 2, 2, -3, 4, 5, 5, 6, -1, 3],       # ties: the normal approximation, corrected
    [rng.gauss(0.3, 1) for _ in range(70)],    # over 50: the normal approximation
    [2.0] * 12,                                # every difference tied
])
def test_the_approximate_paired_test_is_scipys(differences) -> None:
    assert lis.wilcoxon_p(differences) == pytest.approx(
        wilcoxon(differences, method="asymptotic", correction=True).pvalue, rel=1e-9)


def test_zeros_are_dropped_and_nothing_is_no_evidence() -> None:
    assert lis.wilcoxon_p([0, 0, 1, 2, 3, 4, 5, 6]) == lis.wilcoxon_p([1, 2, 3, 4, 5, 6])
    assert lis.wilcoxon_p([]) == lis.wilcoxon_p([0.0, 0.0]) == 1.0


def trace(trace_id: str, version: str, fingerprint: str | None, vocoder_us: int,
          warmup: bool = False, **tags: str) -> list[dict]:
    inference_tags = {s.MODE: "sft", s.WARMUP: str(warmup).lower(), **tags}
    if fingerprint:
        inference_tags[s.INPUT_FINGERPRINT] = fingerprint
    return [{"traceId": trace_id, "id": "1", "name": "get /inference_sft", "kind": "SERVER",
             "timestamp": 1, "duration": 1000 + vocoder_us,
             "tags": {"service.version": version}},
            {"traceId": trace_id, "id": "2", "parentId": "1", "name": s.INFERENCE,
             "timestamp": 2, "duration": 900 + vocoder_us, "tags": inference_tags},
            {"traceId": trace_id, "id": "3", "parentId": "2", "name": s.VOCODER,
             "timestamp": 3, "duration": vocoder_us // 2, "tags": {}},
            {"traceId": trace_id, "id": "4", "parentId": "2", "name": s.VOCODER,
             "timestamp": 4, "duration": vocoder_us - vocoder_us // 2, "tags": {}}]


def test_same_input_pairs_exactly_the_inputs_both_sides_saw() -> None:
    traces = []
    base = [10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000]
    for i, us in enumerate(base):
        traces.append(trace(f"a{i}", "1.0", f"f{i}", us))
        traces.append(trace(f"b{i}", "2.0", f"f{i}", int(us * 1.3)))
    traces.append(trace("a-repeat", "1.0", "f0", 12_000))  # A saw f0 twice: its median pairs
    traces.append(trace("a-only", "1.0", "lonely", 5_000))
    traces.append(trace("b-only", "2.0", "other", 5_000))
    traces.append(trace("b-warm", "2.0", "f1", 1, warmup=True))  # a warm-up never pairs
    traces.append(trace("no-print", "2.0", None, 5_000))
    traces.append(trace("c", "3.0", "f2", 5_000))  # a third version: not a side
    rows, counts = lis.same_input(traces, "service.version", "1.0", "2.0")
    assert counts == {"requests_a": 9, "requests_b": 8, "inputs_a": 8, "inputs_b": 8,
                      "pairs": 7}
    vocoder = next(r for r in rows if r.stage == s.VOCODER)
    assert vocoder.pairs == 7 and vocoder.a[0] == 11_000  # the median of f0's two on side A
    # the two vocoder spans of a request are one request's time in the stage
    assert vocoder.b[-1] == int(640_000 * 1.3)
    assert vocoder.verdict(vocoder.p_paired) == "slower"
    assert vocoder.verdict(vocoder.p_unpaired) == "no significant change"
    assert vocoder.delta == pytest.approx(0.3, abs=0.01)
    assert rows[0].stage == "(request)"
    text = lis.same_input_text(rows, counts, "service.version", "1.0", "2.0")
    assert "7 inputs seen on both sides" in text and "Wilcoxon" in text
    document = lis.same_input_dict(rows, counts, "service.version", "1.0", "2.0")
    assert json.loads(json.dumps(document))["pairs"] == 7


def test_few_pairs_give_no_verdict_and_no_pairs_say_why() -> None:
    traces = [trace(f"a{i}", "1.0", f"f{i}", 1000) for i in range(4)] + [
        trace(f"b{i}", "2.0", f"f{i}", 9000) for i in range(4)]
    rows, counts = lis.same_input(traces, "service.version", "1.0", "2.0")
    assert {r.verdict(r.p_paired) for r in rows} == {"too few pairs"}
    rows, counts = lis.same_input(traces[:4], "service.version", "1.0", "2.0")
    assert counts["pairs"] == 0 and rows == []
    assert "same secret" in lis.same_input_text(rows, counts, "service.version", "1.0", "2.0")


def chunked(trace_id: str, warmup: bool, inflight: str, parts: dict[str, float]) -> list[dict]:
    tags = {s.FIRST_CHUNK_PARTS[p]: str(v) for p, v in parts.items()}
    tags.update({s.FIRST_CHUNK_REQUEST_MS: str(sum(parts.values())),
                 s.WARMUP: str(warmup).lower(), s.INFLIGHT: inflight})
    return [{"traceId": trace_id, "id": "2", "name": s.INFERENCE, "timestamp": 1,
             "duration": 5, "tags": tags}]


def test_the_first_chunk_table_groups_by_phase_and_concurrency() -> None:
    traces = [chunked("w", True, "1", {"llm": 900, "flow": 100}),
              chunked("s1", False, "1", {"llm": 90, "flow": 10}),
              chunked("s2", False, "1", {"llm": 110, "flow": 30}),
              chunked("c", False, "3", {"queue": 50, "llm": 300})]
    rows = lis.first_chunk(traces)
    assert [(r["phase"], r["concurrency"], r["requests"]) for r in rows] == [
        ("steady", "1", 2), ("steady", "3-4", 1), ("warm-up", "1", 1)]
    steady = rows[0]
    assert steady["llm"] == {"p50": 90.0, "p95": 110.0}
    assert steady["total"] == {"p50": 100.0, "p95": 140.0}
    assert steady["vocoder"] == {"p50": 0.0, "p95": 0.0}
    text = lis.first_chunk_text(rows)
    assert "warm-up" in text and "3-4" in text
    assert "no request" in lis.first_chunk_text([])


def test_the_playback_line_counts_streams_that_stalled_by_part() -> None:
    from cosyvoice_otel.tools import report as rep

    def streamed(trace_id, stalls, part=None, stall_ms="0", version="1.0"):
        tags = {s.PLAYBACK_STALLS: str(stalls), s.PLAYBACK_STALL_MS: stall_ms}
        if part:
            tags[s.PLAYBACK_LATE_PART] = part
        return trace(trace_id, version, None, 100, **tags)

    traces = [streamed("a", 0), streamed("b", 2, "vocoder", "300"),
              streamed("c", 1, "llm", "150"), streamed("d", 1, "vocoder", "nan"),
              streamed("w", 1, "llm", "900", "1.0")[:1] + [  # a warm-up: left out
                  {**streamed("w", 1, "llm", "900")[1],
                   "tags": {**streamed("w", 1, "llm", "900")[1]["tags"], s.WARMUP: "true"}}],
              trace("e", "1.0", None, 100),  # not streamed: not counted
              streamed("x", 1, None, "120", version="2.0")]  # stalled, no part recorded
    groups = rep.analyse(traces)
    summary = groups["all"].playback()
    assert (summary["streamed"], summary["stalled"], summary["share"]) == (5, 4, 0.8)
    assert summary["by_part"] == {"vocoder": 2, "llm": 1, "other": 1}
    assert summary["stall_ms_p95"] == 300.0  # NaN is no figure
    text = rep.to_text(groups, "http://z")
    assert "playback: 4 of 5 requests heard chunk by chunk stalled (80.0%)" in text and "vocoder 2" in text
    assert rep.to_dict(groups, "http://z")["all"]["playback"] == summary
    by_version = rep.analyse(traces, by="service.version")
    assert by_version["2.0"].playback()["stalled"] == 1
    assert "[2.0] playback: 1 of 1" in rep.to_text(by_version, "http://z")
    quiet = rep.analyse([trace("e", "1.0", None, 100)])
    assert "playback" not in rep.to_text(quiet, "http://z")
    assert quiet["all"].playback()["streamed"] == 0


def test_same_input_needs_two_sides() -> None:
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "report", "--zipkin",
                          "http://127.0.0.1:9", "--same-input"], capture_output=True, text=True,
                         env=app_env(), timeout=60)
    assert out.returncode == 2 and "--compare" in out.stderr and "Traceback" not in out.stderr
