"""``cosyvoice-traced report``: stage statistics from the traces in Zipkin, alerts, an HTML page.

Reads the traces of a service (one ``/api/v2/traces`` call; traces without a synthesis request
in them, such as ``GET /config``, are skipped) and computes, per stage span name: count,
p50/p95/p99 (nearest-rank percentiles) and mean duration, and the share of request time (sum
of the stage's durations / sum of the requests' durations; a request is the trace's top span
of ours: ``gradio.event`` when present, else the parent SERVER span of ``cosyvoice.inference``,
else ``cosyvoice.inference``). Also errors by ``error.type`` and the slowest requests with
their Zipkin links. ``--by TAG`` groups the same figures by a tag (``service.version``, copied
from resource attributes into every span).

Alert rules: ``STAGE.STAT OP VALUE[UNIT]``, e.g. ``vocoder.p95>5s``,
``cosyvoice.inference.p50<=800ms``, ``errors.count>0``; STAT is count, mean, p50, p95, p99 or
errors; UNIT us, ms, s.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cosyvoice_otel import schema as s

STATS = ("count", "mean", "p50", "p95", "p99", "errors")
_RULE = re.compile(r"^\s*(?P<stage>[\w.<>-]+)\.(?P<stat>count|mean|p50|p95|p99|errors)\s*"
                   r"(?P<op>>=|<=|>|<|==)\s*(?P<value>[0-9.]+)\s*(?P<unit>us|ms|s)?\s*$")
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, None: 1.0}
_HTTP_NOISE = ("http send", "http receive")


class ReportError(ValueError):
    """A bad alert rule or lookback; one line naming it."""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def parse_lookback(text: str) -> int:
    """'90s', '15m', '1h', '2d' -> milliseconds."""
    match = re.fullmatch(r"\s*(\d+)\s*(s|m|h|d)\s*", text)
    if not match:
        raise ReportError(f"--lookback: expected a duration like 15m, 1h or 2d, got {text!r}")
    return int(match.group(1)) * {"s": 1000, "m": 60_000, "h": 3_600_000,
                                  "d": 86_400_000}[match.group(2)]


@dataclass(frozen=True)
class Rule:
    text: str
    stage: str
    stat: str
    op: str
    value: float  # microseconds for durations, plain for count/errors

    def breached(self, actual: float) -> bool:
        return {">": actual > self.value, ">=": actual >= self.value, "<": actual < self.value,
                "<=": actual <= self.value, "==": actual == self.value}[self.op]


def parse_rule(text: str) -> Rule:
    match = _RULE.match(text)
    if not match:
        raise ReportError(f"--alert {text!r}: expected STAGE.STAT OP VALUE[us|ms|s], "
                          "e.g. vocoder.p95>5s")
    stat, unit = match.group("stat"), match.group("unit")
    if stat in ("count", "errors") and unit:
        raise ReportError(f"--alert {text!r}: {stat} takes no unit")
    value = float(match.group("value")) * (_UNITS[unit] if stat not in ("count", "errors")
                                           else 1.0)
    return Rule(text.strip(), match.group("stage"), stat, match.group("op"), value)


@dataclass
class StageStats:
    name: str
    durations: list[float] = field(default_factory=list)  # microseconds, sorted at the end
    errors: int = 0

    def stat(self, name: str) -> float:
        if name == "count":
            return float(len(self.durations))
        if name == "errors":
            return float(self.errors)
        if name == "mean":
            return sum(self.durations) / len(self.durations) if self.durations else 0.0
        return percentile(self.durations, float(name[1:]))


@dataclass
class GroupStats:
    key: str
    stages: dict[str, StageStats] = field(default_factory=dict)
    request_total_us: float = 0.0
    requests: list[tuple[float, str]] = field(default_factory=list)  # (duration, trace id)
    errors: Counter = field(default_factory=Counter)
    interrupted: int = 0  # requests whose stream the client abandoned (end_reason)
    warmup_excluded: int = 0  # warm-up requests left out of the figures

    def share(self, stage: str) -> float:
        total = sum(self.stages[stage].durations) if stage in self.stages else 0.0
        return total / self.request_total_us if self.request_total_us else 0.0


def _request_span(spans: list[dict]) -> dict | None:
    by_id = {sp["id"]: sp for sp in spans}
    event = next((sp for sp in spans if sp["name"] == s.GRADIO_EVENT), None)
    if event is not None and any(sp["name"] in (s.INFERENCE, s.ASR) for sp in spans):
        return event
    inference = next((sp for sp in spans if sp["name"] == s.INFERENCE), None)
    if inference is None:
        return None
    parent = by_id.get(inference.get("parentId", ""))
    return parent if parent is not None and parent.get("kind") == "SERVER" else inference


CONCURRENCY = "concurrency"
# --by concurrency: the in-flight level a request started at, in these buckets
_LEVELS = ((1, "1"), (2, "2"), (4, "3-4"), (8, "5-8"))


def concurrency_bucket(inflight: str | None) -> str:
    try:
        level = int(inflight or "")
    except ValueError:
        return "(none)"
    return next((name for top, name in _LEVELS if level <= top), "9+")


def _group_key(request: dict, inference: dict | None, by: str | None) -> str:
    """The value of ``by`` for this request: on its top span, else on its inference span (where
    the model's configuration and the attribution attributes live)."""
    inference_tags = inference.get("tags", {}) if inference else {}
    if not by:
        return "all"
    if by == CONCURRENCY:
        return concurrency_bucket(inference_tags.get(s.INFLIGHT))
    return request.get("tags", {}).get(by) or inference_tags.get(by) or "(none)"


def analyse(traces: list[list[dict]], by: str | None = None,
            include_warmup: bool = False) -> dict[str, GroupStats]:
    """Per group, per stage durations. Warm-up requests (``cosyvoice.warmup``) are left out
    unless ``include_warmup``: a process's first request per (mode, stream) measures loading,
    not serving. ``by`` is a tag, or ``concurrency`` (in-flight buckets)."""
    groups: dict[str, GroupStats] = {}
    excluded: Counter = Counter()
    for spans in traces:
        request = _request_span(spans)
        if request is None:
            continue
        inference = next((sp for sp in spans if sp["name"] == s.INFERENCE), None)
        tags = inference.get("tags", {}) if inference else {}
        key = _group_key(request, inference, by)
        if tags.get(s.WARMUP) == "true" and not include_warmup:
            excluded[key] += 1
            continue
        group = groups.setdefault(key, GroupStats(key))
        if tags.get(s.END_REASON) == "interrupted":
            group.interrupted += 1
        group.request_total_us += request.get("duration", 0)
        group.requests.append((request.get("duration", 0), request["traceId"]))
        for span in spans:
            if span["name"].endswith(_HTTP_NOISE) or span.get("kind") == "SERVER":
                continue
            stage = group.stages.setdefault(span["name"], StageStats(span["name"]))
            stage.durations.append(span.get("duration", 0))
            tags = span.get("tags", {})
            if "error" in tags:
                stage.errors += 1
                group.errors[tags.get(s.ERROR_TYPE) or tags.get("error") or "error"] += 1
    for key, count in excluded.items():
        groups.setdefault(key, GroupStats(key)).warmup_excluded = count
    for group in groups.values():
        for stage in group.stages.values():
            stage.durations.sort()
        group.requests.sort(reverse=True)
    return groups


def evaluate(groups: dict[str, GroupStats], rules: list[Rule]) -> list[str]:
    """The breached rules, as lines 'RULE: actual VALUE (group)'."""
    breaches = []
    for rule in rules:
        for group in groups.values():
            if rule.stage == "errors":
                actual = float(sum(group.errors.values()))
            else:
                stage = group.stages.get(rule.stage)
                if stage is None:
                    continue
                actual = stage.stat(rule.stat)
            if rule.breached(actual):
                shown = f"{actual:g}" if rule.stat in ("count", "errors") else _fmt_us(actual)
                breaches.append(f"{rule.text}: actual {shown} ({group.key})")
    return breaches


def _fmt_us(us: float) -> str:
    return f"{us / 1e6:.3f} s" if us >= 1e6 else f"{us / 1e3:.1f} ms"


def _stage_order(groups: dict[str, GroupStats]) -> list[str]:
    order = [d.name for d in s.SPANS]
    names = {n for g in groups.values() for n in g.stages}

    def key(name: str) -> tuple[int, str]:
        generic = re.sub(r"^tts_frontend\..*", "tts_frontend.<mode>", name)
        return (order.index(generic) if generic in order else len(order), name)

    return sorted(names, key=key)


def to_dict(groups: dict[str, GroupStats], zipkin_ui: str, slowest: int = 5) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, group in groups.items():
        out[key] = {
            "requests": len(group.requests),
            "stages": {name: {"count": len(st.durations), "p50_us": st.stat("p50"),
                              "p95_us": st.stat("p95"), "p99_us": st.stat("p99"),
                              "mean_us": st.stat("mean"), "errors": st.errors,
                              "share": group.share(name)}
                       for name, st in sorted(group.stages.items())},
            "errors_by_type": dict(group.errors),
            "interrupted": group.interrupted,
            "warmup_excluded": group.warmup_excluded,
            "slowest": [{"trace_id": t, "duration_us": d,
                         "link": f"{zipkin_ui}/zipkin/traces/{t}"}
                        for d, t in group.requests[:slowest]],
        }
    return out


def to_text(groups: dict[str, GroupStats], zipkin_ui: str, slowest: int = 5) -> str:
    keys = sorted(groups)
    stages = _stage_order(groups)
    lines: list[str] = []
    if len(keys) == 1:
        group = groups[keys[0]]
        lines.append(f"requests: {len(group.requests)}")
        lines.append(f"{'stage':38s} {'count':>6s} {'p50':>10s} {'p95':>10s} {'p99':>10s} "
                     f"{'share':>7s} {'errors':>6s}")
        for name in stages:
            st = group.stages[name]
            lines.append(f"{name:38s} {len(st.durations):6d} {_fmt_us(st.stat('p50')):>10s} "
                         f"{_fmt_us(st.stat('p95')):>10s} {_fmt_us(st.stat('p99')):>10s} "
                         f"{100 * group.share(name):6.1f}% {st.errors:6d}")
    else:  # side by side, one column per group: p50 / p95
        lines.append(f"{'stage':38s}" + "".join(f" | {k[:24]:>24s}" for k in keys))
        for name in stages:
            cells = [f"{_fmt_us(st.stat('p50'))} / {_fmt_us(st.stat('p95'))}"
                     if (st := groups[k].stages.get(name)) else "-" for k in keys]
            lines.append(f"{name:38s}" + "".join(f" | {c:>24s}" for c in cells))
        lines.append("(cells: p50 / p95; requests: " + ", ".join(
            f"{k}={len(groups[k].requests)}" for k in keys) + ")")
    for key in keys:
        group = groups[key]
        prefix = f"[{key}] " if len(keys) > 1 else ""
        if group.interrupted:
            lines.append(f"{prefix}interrupted requests (client went away): {group.interrupted}")
        if group.warmup_excluded:
            lines.append(f"{prefix}warm-up requests left out: {group.warmup_excluded} "
                         "(--include-warmup keeps them)")
        if group.errors:
            lines.append(f"{prefix}errors by type: " + ", ".join(
                f"{t}={n}" for t, n in group.errors.most_common()))
        lines.append(f"{prefix}slowest requests:")
        lines += [f"  {_fmt_us(d):>10s}  {zipkin_ui}/zipkin/traces/{t}"
                  for d, t in group.requests[:slowest]]
    return "\n".join(lines)


def to_html(groups: dict[str, GroupStats], zipkin_ui: str, title: str) -> str:
    """One self-contained page: a stage-breakdown bar chart (inline SVG) and the tables."""
    esc = html.escape
    stages = [n for n in _stage_order(groups) if n not in (s.GRADIO_EVENT,)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    for key in sorted(groups):
        group = groups[key]
        parts.append(f"<h2>{esc(key)} &mdash; {len(group.requests)} requests</h2>")
        shares = [(n, group.share(n)) for n in stages if n in group.stages]
        width, bar_h = 640, 18
        svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width + 320}' "
               f"height='{bar_h * len(shares) + 10}' role='img' aria-label='stage breakdown'>"]
        for i, (name, share) in enumerate(shares):
            y = i * bar_h + 5
            svg.append(f"<text x='0' y='{y + 13}' font-size='12'>{esc(name)}</text>"
                       f"<rect x='300' y='{y}' width='{max(1, share * width):.1f}' "
                       f"height='{bar_h - 4}' fill='#4a7bd0'/>"
                       f"<text x='{305 + share * width:.1f}' y='{y + 13}' font-size='12'>"
                       f"{100 * share:.1f}%</text>")
        svg.append("</svg>")
        parts.append("<h3>Share of request time by stage</h3>" + "".join(svg))
        parts.append("<table><tr><th>stage</th><th>count</th><th>p50</th><th>p95</th>"
                     "<th>p99</th><th>share</th><th>errors</th></tr>")
        for name in stages:
            st = group.stages.get(name)
            if st is not None:
                parts.append(f"<tr><td>{esc(name)}</td><td>{len(st.durations)}</td>"
                             f"<td>{_fmt_us(st.stat('p50'))}</td><td>{_fmt_us(st.stat('p95'))}"
                             f"</td><td>{_fmt_us(st.stat('p99'))}</td>"
                             f"<td>{100 * group.share(name):.1f}%</td><td>{st.errors}</td></tr>")
        parts.append("</table><h3>Errors by type</h3><table><tr><th>type</th><th>count</th></tr>")
        parts += [f"<tr><td>{esc(t)}</td><td>{n}</td></tr>" for t, n in group.errors.most_common()]
        parts.append("</table><h3>Slowest requests</h3><ol>")
        parts += [f"<li>{_fmt_us(d)} <a href='{esc(zipkin_ui)}/zipkin/traces/{esc(t)}'>{esc(t)}"
                  "</a></li>" for d, t in group.requests[:10]]
        parts.append("</ol>")
    parts.append("</body></html>")
    return "".join(parts)
