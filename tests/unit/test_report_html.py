"""`report --html`'s page, read back (issue 31: its lines ran only in the e2e tests, which check
that a page is written, not what it draws): each chart's marks stand where their figures say,
each table row holds its stage's figures, and the slowest requests link to their traces."""

from __future__ import annotations

import math
import re
import time
import xml.etree.ElementTree as ET

import pytest

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools import report as rep

SVG = "{http://www.w3.org/2000/svg}"


def stats(name: str, durations: list[float], errors: int = 0) -> rep.StageStats:
    return rep.StageStats(name, sorted(durations), errors)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or the browser shows nothing


def rects(root: ET.Element) -> list[dict]:
    return [{**r.attrib, "title": r.findtext(f"{SVG}title")} for r in root.iter(f"{SVG}rect")]


# -- p95 and errors over time -----------------------------------------------------------------

def test_the_timeline_draws_each_buckets_p95_and_errors_to_scale() -> None:
    group = rep.GroupStats("all")
    t0 = 1_700_000_000_000_000  # µs
    hour = 3_600_000_000
    group.timeline = [(t0, 100_000.0, False),                                  # bucket 0
                      (t0 + hour, 200_000.0, False), (t0 + hour + 1, 400_000.0, True),  # 1
                      (t0 + 4 * hour - 1, 800_000.0, True), (t0 + 4 * hour, 600_000.0, True)]
    root = parse(rep.timeline_svg(group, buckets=4))
    bars = [r for r in rects(root) if r["fill"] == rep.COLORS[0]]
    errs = [r for r in rects(root) if r["fill"] == rep.ERROR_COLOR]
    assert len(bars) == 4  # one per bucket, an empty one at height 0
    p95 = [rep.percentile(sorted(d), 95) for d in ([100_000.0], [200_000.0, 400_000.0], [],
                                                   [600_000.0, 800_000.0])]
    p95[2] = 0.0
    top = max(p95)
    heights = [float(b["height"]) for b in bars]
    assert heights == pytest.approx([180 * v / top for v in p95], abs=0.05)
    # bars stand on one baseline (y + height = 195), left to right in bucket order
    assert all(float(b["y"]) + float(b["height"]) == pytest.approx(195, abs=0.1) for b in bars)
    assert [int(b["x"]) for b in bars] == sorted(int(b["x"]) for b in bars)
    assert [b["title"] for b in bars] == [f"p95 {rep._fmt_us(v)}" for v in p95]
    # errors: bucket 1 has one, bucket 3 two (the tallest, 40 px); bucket 0 none
    assert [(e["title"], float(e["height"])) for e in errs] == [("1 errors", 20.0),
                                                                ("2 errors", 40.0)]
    assert [e["x"] for e in errs] == [bars[1]["x"], bars[3]["x"]]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts[0] == f"p95 {rep._fmt_us(top)}" and texts[1] == "errors"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(t0 / 1e6))
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime((t0 + 4 * hour) / 1e6))
    assert texts[-1] == f"{when} .. {until}, 4 buckets"


# -- the latency distribution per stage ---------------------------------------------------------

def test_each_series_box_spans_its_quartiles_with_whiskers_and_p99_in_order() -> None:
    fast = stats("vocoder", [1_000.0 * (i + 1) for i in range(100)])  # 1 ms .. 100 ms
    slow = stats("vocoder", [10_000.0 * (i + 1) for i in range(100)])  # 10 ms .. 1 s
    root = parse(rep.distribution_svg(["vocoder", "llm"], [("A", {"vocoder": fast}),
                                                           ("B", {"vocoder": slow})]))
    groups = list(root.iter(f"{SVG}g"))
    assert len(groups) == 2  # llm has no figures: no box
    boxes = []
    for g, (label, st) in zip(groups, (("A", fast), ("B", slow)), strict=True):
        assert g.findtext(f"{SVG}title") == (
            f"{label} vocoder: p50 {rep._fmt_us(st.stat('p50'))}, "
            f"p95 {rep._fmt_us(st.stat('p95'))}, p99 {rep._fmt_us(st.stat('p99'))}")
        whisker, median = g.findall(f"{SVG}line")
        box, dot = g.find(f"{SVG}rect"), g.find(f"{SVG}circle")
        p5, p95 = float(whisker.get("x1")), float(whisker.get("x2"))
        p25, p75 = float(box.get("x")), float(box.get("x")) + float(box.get("width"))
        p50, p99 = float(median.get("x1")), float(dot.get("cx"))
        assert median.get("x1") == median.get("x2") and median.get("stroke") == "#000"
        assert p5 < p25 < p50 < p75 < p95 < p99
        # a log axis: equal ratios are equal distances (p50/p5 is the same in both series)
        boxes.append((p5, p50, p99, box.get("fill"), float(box.get("y"))))
    (a5, a50, a99, a_fill, a_y), (b5, b50, b99, b_fill, b_y) = boxes
    assert b50 - a50 == pytest.approx(b5 - a5, abs=0.2) == pytest.approx(b99 - a99, abs=0.2)
    assert (a_fill, b_fill) == rep.COLORS and b_y == a_y + 14  # B under A, in its own colour
    # stage labels, top to bottom, and the decade grid within the figures' range
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert labels.index("vocoder") < labels.index("llm")
    decades = {name for _, name in rep._DECADES}
    # p5 of A is 6 ms, p99 of B 1 s: the grid lines inside that range, none outside
    assert decades & set(labels) == {"10 ms", "100 ms", "1 s"}
    legend = [t for t in root.iter(f"{SVG}text")][-1]
    spans = legend.findall(f"{SVG}tspan")
    assert [(t.get("fill"), t.text) for t in spans] == [(rep.COLORS[0], "\u25a0 A"),
                                                        (rep.COLORS[1], "\u25a0 B")]


# -- the page -----------------------------------------------------------------------------------

def request(trace_id: str, total_us: int, vocoder_us: int, failed: bool = False) -> list[dict]:
    tags = {s.MODE: "sft"}
    spans = [{"traceId": trace_id, "id": "1", "name": s.INFERENCE, "timestamp": 1_000,
              "duration": total_us, "kind": "SERVER", "tags": tags},
             {"traceId": trace_id, "id": "2", "parentId": "1", "name": "vocoder",
              "timestamp": 2_000, "duration": vocoder_us,
              "tags": {"error": "vocoder_failed", s.ERROR_TYPE: "vocoder_failed"}
              if failed else {}}]
    return spans


@pytest.fixture
def groups() -> dict[str, rep.GroupStats]:
    traces = [request(f"{i:032x}", 100_000 * (i + 1), 25_000 * (i + 1), failed=i == 0)
              for i in range(12)]
    return rep.analyse(traces)


def test_the_page_shows_each_stages_share_figures_and_errors(groups) -> None:
    page = rep.to_html(groups, "http://zipkin:9411", "voice <prod>")
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>")
    assert "<title>voice &lt;prod&gt;</title>" in page and "<h1>voice &lt;prod&gt;</h1>" in page
    group = groups["all"]
    assert f"<h2>all &mdash; {len(group.requests)} requests</h2>" in page
    # the share chart: a bar per stage, as wide as its share of 640 px, its percentage beside
    share = group.share("vocoder")
    chart = re.search(r"<h3>Share of request time by stage</h3>(<svg.*?</svg>)", page).group(1)
    root = parse(chart)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    names, percents, bars = texts[0::2], texts[1::2], rects(root)
    assert names == [n for n in rep._stage_order(groups) if n in group.stages
                     and n != s.GRADIO_EVENT]
    for name, percent, bar in zip(names, percents, bars, strict=True):
        assert percent == f"{100 * group.share(name):.1f}%"
        assert float(bar["width"]) == pytest.approx(max(1, group.share(name) * 640), abs=0.05)
    assert share == pytest.approx(0.25) and f"{100 * share:.1f}%" in percents
    # the table: the stage's count, p50, p95, p99, share and errors, in that order
    st = group.stages["vocoder"]
    row = (f"<tr><td>vocoder</td><td>{len(st.durations)}</td><td>{rep._fmt_us(st.stat('p50'))}"
           f"</td><td>{rep._fmt_us(st.stat('p95'))}</td><td>{rep._fmt_us(st.stat('p99'))}</td>"
           f"<td>{100 * share:.1f}%</td><td>{st.errors}</td></tr>")
    assert row in page and st.errors == 1
    assert ("<table><tr><th>stage</th><th>count</th><th>p50</th><th>p95</th><th>p99</th>"
            "<th>share</th><th>errors</th></tr>") in page
    assert "<tr><td>vocoder_failed</td><td>1</td></tr>" in page
    # the distribution and the timeline are drawn for the group
    assert "aria-label='latency distribution per stage'" in page
    assert "aria-label='request p95 and errors over time'" in page
    assert f"<td>{s.GRADIO_EVENT}</td>" not in page


def test_the_page_lists_the_ten_slowest_requests_linked_to_zipkin(groups) -> None:
    page = rep.to_html(groups, "http://zipkin:9411", "t")
    links = re.findall(r"<li>([^<]*) <a href='([^']*)'>([0-9a-f]{32})</a></li>", page)
    assert len(links) == 10
    ids = [trace_id for _, _, trace_id in links]
    assert ids == [f"{i:032x}" for i in range(11, 1, -1)]  # slowest first
    assert all(href == f"http://zipkin:9411/zipkin/traces/{t}" for _, href, t in links)
    assert links[0][0] == rep._fmt_us(1_200_000.0)


def test_the_comparison_page_draws_both_series_and_each_stages_verdict(groups) -> None:
    a = rep.GroupStats("A", stages={"vocoder": stats("vocoder", [10_000.0] * 30)})
    b = rep.GroupStats("B", stages={"vocoder": stats("vocoder", [20_000.0] * 30)})
    both = {"A": a, "B": b}
    rows = rep.compare(both, "A", "B")
    page = rep.compare_html(rows, "version", "A", "B", both, "A vs B")
    assert "<p>version: A = A, B = B</p>" in page
    assert "&#9632; A A</tspan>" in page and "&#9632; B B</tspan>" in page
    (row,) = [r for r in rows if r.stage == "vocoder"]
    assert (f"<tr><td>vocoder</td><td>{rep._cell(row.a)}</td><td>{rep._cell(row.b)}</td>"
            f"<td>{rep._pct(row.delta('p50'))}</td><td>{rep._pct(row.delta('p95'))}</td>"
            f"<td>{row.verdict}</td></tr>") in page
    assert row.delta("p50") == pytest.approx(1.0) and "slower" in row.verdict
    assert page.endswith("</body></html>")
    text = rep.compare_text(rows, "version", "A", "B", both)
    lines = text.splitlines()
    assert lines[0] == "compare version: A=A (0 requests) vs B=B (0 requests)"
    assert lines[1].split() == ["stage", "A", "p50", "/", "p95", "B", "p50", "/", "p95", "d",
                                "p50", "d", "p95", "verdict"]
    assert lines[2].startswith("vocoder") and lines[2].rstrip().endswith(row.verdict)
    assert math.isfinite(row.delta("p95"))
