"""What the listener heard, over many requests: ``report --first-chunk`` and ``--same-input``.

* **Playback** (in ``report``'s groups: ``report.GroupStats.playback``): of the requests heard
  chunk by chunk, how many stalled, and where the longest stall's time went.
* **First chunk** (``report --first-chunk``): the critical path's parts
  (``tts.first_chunk.<part>_ms``, which add up to ``tts.first_chunk.request_ms``), p50 and p95
  per part, for warm-up and steady requests and per concurrency level.
* **Same input** (``report --compare K=A --compare K=B --same-input``): requests are paired by
  ``cosyvoice.input.fingerprint`` (the same input, under the deployment's secret) across the two
  sides; per stage, each request's total time in that stage (its spans summed), one pair per
  input (a side's repeats of it: their median). The paired test is Wilcoxon's signed-rank test
  (exact for up to 50 pairs without ties, else the normal approximation with tie and continuity
  corrections; a unit test holds it to scipy's), shown beside the unpaired Mann-Whitney test
  on the same requests: pairing removes the differences between inputs (a long text's vocoder
  takes longer than a short one's, whatever the version), so a shift shows with fewer requests.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.report import (
    ALPHA,
    MIN_EFFECT,
    _group_key,
    _number,
    _request_span,
    concurrency_bucket,
    is_stage,
    mann_whitney_p,
    percentile,
)
from cosyvoice_otel.tools.zipkin import normalize


def _requests(traces: list[list[dict]], include_warmup: bool = False) -> list[tuple[list[dict], dict, dict]]:
    """(spans, top span, inference span) of each synthesis request; warm-up ones left out
    unless asked."""
    out = []
    for spans in traces:
        spans = normalize(spans)
        request = _request_span(spans)
        inference = next((sp for sp in spans if sp["name"] == s.INFERENCE), None)
        if request is None or inference is None:
            continue
        if inference["tags"].get(s.WARMUP) == "true" and not include_warmup:
            continue
        out.append((spans, request, inference))
    return out


# -------------------------------------------------------------------------------- first chunk

def first_chunk(traces: list[list[dict]]) -> list[dict[str, Any]]:
    """Per phase (warm-up, steady) and concurrency level: p50/p95 of each part and the total."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for _, _, inference in _requests(traces, include_warmup=True):
        tags = inference["tags"]
        total = _number(tags.get(s.FIRST_CHUNK_REQUEST_MS, ""))
        if total is None:
            continue
        phase = "warm-up" if tags.get(s.WARMUP) == "true" else "steady"
        key = (phase, concurrency_bucket(tags.get(s.INFLIGHT)))
        values = groups.setdefault(key, {})
        values.setdefault("total", []).append(total)
        for part in s.PARTS:
            values.setdefault(part, []).append(
                _number(tags.get(s.FIRST_CHUNK_PARTS[part], "")) or 0.0)
    rows = []
    for (phase, level), values in sorted(groups.items()):
        row: dict[str, Any] = {"phase": phase, "concurrency": level,
                               "requests": len(values["total"])}
        for name, series in values.items():
            series.sort()
            row[name] = {"p50": percentile(series, 50), "p95": percentile(series, 95)}
        rows.append(row)
    return rows


def first_chunk_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no request has first-chunk figures (tts.first_chunk.request_ms)"
    names = ("total", *s.PARTS)
    lines = ["first chunk, from the request's start: p50 / p95 in ms per part (they add up "
             "to total)",
             f"{'phase':8s} {'conc.':>5s} {'n':>5s} " + " ".join(f"{n:>15s}" for n in names)]
    for row in rows:
        cells = " ".join(f"{row[n]['p50']:>7.1f}/{row[n]['p95']:<7.1f}" for n in names)
        lines.append(f"{row['phase']:8s} {row['concurrency']:>5s} {row['requests']:>5d} {cells}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ same input

def wilcoxon_p(differences: list[float]) -> float:
    """Two-sided p-value of Wilcoxon's signed-rank test: is the median difference zero? Zeros
    are dropped (Wilcoxon's own rule); exact for up to 50 differences without ties, else the
    normal approximation with tie and continuity corrections."""
    d = [x for x in differences if x != 0]
    n = len(d)
    if n == 0:
        return 1.0
    ordered = sorted(range(n), key=lambda i: abs(d[i]))
    ranks = [0.0] * n
    ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(d[ordered[j + 1]]) == abs(d[ordered[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[ordered[k]] = (i + j) / 2 + 1
        count = j - i + 1
        ties += count ** 3 - count
        i = j + 1
    w_plus = sum(r for r, x in zip(ranks, d, strict=True) if x > 0)
    if n <= 50 and not ties:
        counts = [1] + [0] * (n * (n + 1) // 2)  # subsets of 1..n by their rank sum
        for rank in range(1, n + 1):
            for total in range(len(counts) - 1, rank - 1, -1):
                counts[total] += counts[total - rank]
        whole = 2 ** n
        w = int(round(w_plus))
        low = sum(counts[: w + 1]) / whole
        high = sum(counts[w:]) / whole
        return min(1.0, 2 * min(low, high))
    mean = n * (n + 1) / 4
    variance = n * (n + 1) * (2 * n + 1) / 24 - ties / 48
    if variance <= 0:
        return 1.0
    z = (abs(w_plus - mean) - 0.5) / math.sqrt(variance)
    return max(0.0, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2))))


MIN_PAIRS = 5  # below it, no verdict (a two-sided exact test cannot reach 0.05 with 5 pairs
# unless all agree: 2/32 = 0.0625; 6 pairs can: 2/64)


@dataclass
class PairedStage:
    stage: str
    a: list[float]  # microseconds, one per paired input (side A)
    b: list[float]

    @property
    def pairs(self) -> int:
        return len(self.a)

    @property
    def p_paired(self) -> float:
        return wilcoxon_p([y - x for x, y in zip(self.a, self.b, strict=True)])

    @property
    def p_unpaired(self) -> float:
        return mann_whitney_p(self.a, self.b)

    @property
    def delta(self) -> float | None:
        """The median of the per-input relative changes (B - A) / A."""
        changes = [(y - x) / x for x, y in zip(self.a, self.b, strict=True) if x > 0]
        return statistics.median(changes) if changes else None

    def verdict(self, p: float) -> str:
        if self.pairs < MIN_PAIRS:
            return "too few pairs"
        delta = self.delta
        if delta is None or p >= ALPHA or abs(delta) < MIN_EFFECT:
            return "no significant change"
        return "faster" if delta < 0 else "slower"


def _side_totals(spans: list[dict], request: dict) -> dict[str, float]:
    """One request's time per stage (its spans of that name summed) and the request's own."""
    totals: dict[str, float] = {"(request)": float(request.get("duration", 0))}
    for span in spans:
        if not is_stage(span):
            continue
        totals[span["name"]] = totals.get(span["name"], 0.0) + float(span.get("duration", 0))
    return totals


def same_input(traces: list[list[dict]], key: str, a: str, b: str,
               include_warmup: bool = False) -> tuple[list[PairedStage], dict[str, int]]:
    """Per stage, the pairs of requests with equal fingerprints on side A and side B; and the
    counts: requests per side with a fingerprint, distinct inputs per side, pairs."""
    sides: dict[str, dict[str, list[dict[str, float]]]] = {a: {}, b: {}}
    for spans, request, inference in _requests(traces, include_warmup):
        side = _group_key(request, inference, key)
        print_ = inference["tags"].get(s.INPUT_FINGERPRINT)
        if side in sides and print_:
            sides[side].setdefault(print_, []).append(_side_totals(spans, request))
    common = sorted(set(sides[a]) & set(sides[b]))
    stages: dict[str, PairedStage] = {}
    for print_ in common:
        one, two = sides[a][print_], sides[b][print_]
        for stage in set().union(*one, *two):
            if all(stage in t for t in one) and all(stage in t for t in two):
                row = stages.setdefault(stage, PairedStage(stage, [], []))
                row.a.append(statistics.median(t[stage] for t in one))
                row.b.append(statistics.median(t[stage] for t in two))
    counts = {"requests_a": sum(map(len, sides[a].values())),
              "requests_b": sum(map(len, sides[b].values())),
              "inputs_a": len(sides[a]), "inputs_b": len(sides[b]), "pairs": len(common)}
    order = sorted(stages.values(), key=lambda r: (r.stage != "(request)", -sum(r.a)))
    return order, counts


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


def same_input_text(rows: list[PairedStage], counts: dict[str, int], key: str, a: str,
                    b: str) -> str:
    lines = [f"same input, {key}: A={a} vs B={b}: {counts['pairs']} inputs seen on both sides "
             f"(A: {counts['requests_a']} requests of {counts['inputs_a']} inputs, B: "
             f"{counts['requests_b']} of {counts['inputs_b']})",
             f"{'stage':34s} {'pairs':>5s} {'A median':>10s} {'B median':>10s} {'d median':>9s} "
             f"{'paired p':>9s} {'verdict':22s} {'unpaired p':>10s}  unpaired verdict"]
    for row in rows:
        delta = row.delta
        lines.append(
            f"{row.stage:34s} {row.pairs:>5d} {_ms(statistics.median(row.a)):>10s} "
            f"{_ms(statistics.median(row.b)):>10s} "
            f"{'-' if delta is None else f'{100 * delta:+.1f}%':>9s} {row.p_paired:>9.4f} "
            f"{row.verdict(row.p_paired):22s} {row.p_unpaired:>10.4f}  "
            f"{row.verdict(row.p_unpaired)}")
    lines.append(f"(paired: Wilcoxon signed-rank on each input's two times; unpaired: "
                 f"Mann-Whitney U on the same requests; significant when p < {ALPHA} and the "
                 f"median change is at least {100 * MIN_EFFECT:.0f}%)")
    if not counts["pairs"]:
        lines.append("no input was seen on both sides: are both deployments recording "
                     f"{s.INPUT_FINGERPRINT} with the same secret (--fingerprint-key)?")
    return "\n".join(lines)


def same_input_dict(rows: list[PairedStage], counts: dict[str, int], key: str, a: str,
                    b: str) -> dict[str, Any]:
    return {"key": key, "a": a, "b": b, **counts,
            "stages": [{"stage": r.stage, "pairs": r.pairs,
                        "a_median_us": statistics.median(r.a),
                        "b_median_us": statistics.median(r.b), "delta": r.delta,
                        "paired_p": r.p_paired, "paired_verdict": r.verdict(r.p_paired),
                        "unpaired_p": r.p_unpaired,
                        "unpaired_verdict": r.verdict(r.p_unpaired)} for r in rows]}
