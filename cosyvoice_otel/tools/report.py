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
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.zipkin import normalize

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


def parse_lookback(text: str, option: str = "--lookback") -> int:
    """'90s', '15m', '1h', '2d' -> milliseconds; an error names ``option``."""
    match = re.fullmatch(r"\s*(\d+)\s*(s|m|h|d)\s*", text)
    if not match:
        raise ReportError(f"{option}: expected a duration like 15m, 1h or 2d, got {text!r}")
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
    # (start, duration, failed) per request, for the timeline: "what happened at 3 pm?"
    timeline: list[tuple[int, float, bool]] = field(default_factory=list)
    # per request heard chunk by chunk (streamed, or several sentences): (its playback stall
    # in ms, the late part when it stalled, else None)
    streams: list[tuple[float, str | None]] = field(default_factory=list)

    def playback(self) -> dict[str, Any]:
        """The requests heard chunk by chunk ("streamed": playback figures recorded), those
        that stalled, and the part of their longest stall."""
        stalled = [part for _, part in self.streams if part is not None]
        stall_ms = sorted(ms for ms, _ in self.streams)
        return {"streamed": len(self.streams), "stalled": len(stalled),
                "share": round(len(stalled) / len(self.streams), 4) if self.streams else 0.0,
                "by_part": dict(Counter(stalled).most_common()),
                "stall_ms_p95": percentile(stall_ms, 95)}

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
    requests = []
    for spans in traces:
        spans = normalize(spans)  # whatever Zipkin sent: no span lacks a name or a number
        request = _request_span(spans)
        if request is not None:
            inference = next((sp for sp in spans if sp["name"] == s.INFERENCE), None)
            requests.append((spans, request, inference, _group_key(request, inference, by)))
    label = numeric_buckets([key for *_, key in requests]) if by and by != CONCURRENCY else None
    for spans, request, inference, raw_key in requests:
        tags = inference.get("tags", {}) if inference else {}
        key = label(raw_key) if label else raw_key
        if tags.get(s.WARMUP) == "true" and not include_warmup:
            excluded[key] += 1
            continue
        group = groups.setdefault(key, GroupStats(key))
        if tags.get(s.END_REASON) == "interrupted":
            group.interrupted += 1
        group.request_total_us += request.get("duration", 0)
        group.requests.append((request.get("duration", 0), request["traceId"]))
        group.timeline.append((int(request.get("timestamp", 0)), request.get("duration", 0),
                               any("error" in sp.get("tags", {}) for sp in spans)))
        stream = _stream(tags)
        if stream is not None:
            group.streams.append(stream)
        for span in spans:
            if not is_stage(span):
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


def is_stage(span: dict) -> bool:
    """A span the stage figures count: not a server span (the request), not the ASGI
    instrumentation's per-message noise."""
    return not span["name"].endswith(_HTTP_NOISE) and span.get("kind") != "SERVER"


def _stream(tags: dict) -> tuple[float, str | None] | None:
    """(stall ms, late part if it stalled) of a request with playback figures, else None."""
    stalls, stall_ms = _number(tags.get(s.PLAYBACK_STALLS, "")), _number(
        tags.get(s.PLAYBACK_STALL_MS, ""))
    if stalls is None:
        return None
    late = (tags.get(s.PLAYBACK_LATE_PART) or "other") if stalls > 0 else None
    return stall_ms or 0.0, late


BUCKETS = 5  # a numeric tag's values in this many ranges of equal counts


OTHER = "(other)"


def _number(text: str) -> float | None:
    """A tag's finite number, else None (not a number, NaN, inf)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _not_finite(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def numeric_buckets(keys: list[str], buckets: int = BUCKETS) -> Any:
    """For ``--by``: a function giving each value its column, so there are never more than
    about ``buckets`` of them; None when there are few enough distinct values (each is then
    its own group). A numeric tag (``audio.snr_db``, ``cosyvoice.text.length``) goes in
    ``buckets`` ranges of (about) equal counts, labelled ``[low, high)`` (the last one
    closed), ``nan`` and ``inf`` set aside in a column each; any other tag keeps its
    ``buckets`` most frequent values and puts the rest in ``(other)``."""
    present = [k for k in keys if k != "(none)"]
    distinct = set(present)
    if len(distinct) <= buckets:
        return None
    if all(_number(k) is not None or _not_finite(k) for k in distinct):
        return _ranges(sorted(v for k in present if (v := _number(k)) is not None), buckets)
    top = {key for key, _n in Counter(present).most_common(buckets)}
    return lambda key: key if key in top or key == "(none)" else OTHER


def _ranges(ordered: list[float], buckets: int) -> Any:
    if not ordered or len(set(ordered)) <= buckets:  # few numbers (beside nan): their own
        return lambda key: key
    edges = sorted({ordered[min(len(ordered) - 1, (len(ordered) * i) // buckets)]
                    for i in range(buckets)} | {ordered[-1]})

    def label(key: str) -> str:
        value = _number(key)
        if value is None:
            return key  # (none), nan, inf: a column each
        for low, high in zip(edges[:-2], edges[1:-1], strict=True):
            if value < high:
                return f"[{low:g}, {high:g})"
        return f"[{edges[-2]:g}, {edges[-1]:g}]"  # the last range holds its top value too

    return label


AUDIO_FIGURES = (s.AUDIO_SNR_DB, s.AUDIO_RMS_DBFS, s.AUDIO_PEAK_DBFS, s.AUDIO_SILENCE,
                 s.AUDIO_CLIPPING, s.PROMPT_SECONDS, s.AUDIO_FORMAT)


# a figure recorded with a failure (``fail(reason, message, snr_db=4.2)``) under a short name
# fills the column of the attribute it stands for
FIGURE_COLUMNS = {"snr_db": s.AUDIO_SNR_DB, "rms_dbfs": s.AUDIO_RMS_DBFS,
                  "silence_ratio": s.AUDIO_SILENCE, "clipping_ratio": s.AUDIO_CLIPPING,
                  "prompt_seconds": s.PROMPT_SECONDS}


def _failure_figures(failed: list[dict]) -> dict[str, str]:
    """The numbers recorded with the failures (the events of the failed spans: Zipkin keeps
    each as an annotation ``{"message": {figure: value}}``), by name; exception events and
    anything not a number are left out."""
    found: dict[str, str] = {}
    for span in failed:
        annotations = span.get("annotations")
        for annotation in annotations if isinstance(annotations, list) else ():
            try:
                event = json.loads(annotation.get("value", ""))
            except (ValueError, TypeError, AttributeError):
                continue
            if not isinstance(event, dict):
                continue
            for name, values in event.items():
                if name == "exception" or not isinstance(values, dict):
                    continue
                for key, value in values.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        found.setdefault(str(key), f"{value:g}")
    return found


def prompt_figures(spans: list[dict], failed: list[dict]) -> tuple[dict[str, str],
                                                                     dict[str, str]]:
    """The prompt audio's figures of a request (the prompt stage's or the transcriber's, else
    the request's copy; a figure ``fail()`` recorded fills its own column), and every number
    recorded with its failures."""
    figures: dict[str, str] = {}
    for span in spans:
        if span["name"].startswith("audio_preprocess.") or span["name"] in (s.ASR, s.INFERENCE):
            for key in AUDIO_FIGURES:
                if key in span["tags"] and key not in figures:
                    figures[key] = span["tags"][key]
    recorded = _failure_figures(failed)
    for short, key in FIGURE_COLUMNS.items():  # fail("...", snr_db=4.2): its own column
        if key not in figures and short in recorded:
            figures[key] = recorded[short]
    return figures, recorded


def failures(traces: list[list[dict]], reason: str | None, zipkin_ui: str) -> list[dict]:
    """The failing requests (``error.type`` == ``reason`` when given), newest first, each with
    its reasons, its prompt audio's figures (the seed's triage: an empty ASR transcript and
    the prompt's SNR side by side) and its Zipkin link."""
    out = []
    for spans in traces:
        spans = normalize(spans)
        failed = [sp for sp in spans if "error" in sp["tags"]]
        reasons = sorted({sp["tags"].get(s.ERROR_TYPE) or sp["tags"].get("error") or "error"
                          for sp in failed})
        if not failed or (reason and reason not in reasons):
            continue
        figures, recorded = prompt_figures(spans, failed)
        request = _request_span(spans) or min(spans, key=lambda sp: sp["timestamp"])
        out.append({"trace_id": request["traceId"], "reasons": reasons,
                    "timestamp_us": request["timestamp"], "duration_us": request["duration"],
                    "audio": figures, "figures": recorded,
                    "link": f"{zipkin_ui}/zipkin/traces/{request['traceId']}"})
    out.sort(key=lambda row: row["timestamp_us"], reverse=True)
    return out


def failures_text(rows: list[dict], reason: str | None) -> str:
    title = f"failing requests{f' ({reason})' if reason else ''}: {len(rows)}"
    lines = [title, f"{'when':19s} {'reasons':24s} {'snr dB':>7s} {'rms dBFS':>9s} "
                    f"{'silence':>8s} {'clip':>7s} {'prompt s':>8s}  trace  (figures)"]
    for row in rows:
        audio = row["audio"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["timestamp_us"] / 1e6))
        lines.append(f"{when:19s} {','.join(row['reasons'])[:24]:24s} "
                     f"{audio.get(s.AUDIO_SNR_DB, '-'):>7s} {audio.get(s.AUDIO_RMS_DBFS, '-'):>9s} "
                     f"{audio.get(s.AUDIO_SILENCE, '-'):>8s} {audio.get(s.AUDIO_CLIPPING, '-'):>7s} "
                     f"{audio.get(s.PROMPT_SECONDS, '-'):>8s}  {row['link']}"
                     + (f"  ({_figures_text(row.get('figures') or {})})"
                        if row.get("figures") else ""))
    return "\n".join(lines)


def _figures_text(figures: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(figures.items()))


def sampling_note(traces: list[list[dict]]) -> str | None:
    """One line when the traces read are a SAMPLE (their ``cosyvoice.sampling.rate`` tag): the
    figures above are then biased (keep-errors keeps every failure, the ratio a share of the
    rest); the metrics count every request."""
    rates: set[float] = set()
    for spans in traces:
        for span in spans:
            value = span.get("tags", {}).get(s.SAMPLING_RATE)
            if value is not None:
                try:
                    rates.add(float(value))
                except ValueError:
                    pass
    if not rates:
        return None
    shown = ", ".join(f"{100 * r:g}%" for r in sorted(rates))
    return (f"note: these traces are a sample (sampling rate {shown}; failed requests are all "
            "kept with --keep-errors): percentiles and error shares here are biased. For "
            "unbiased rates use the metrics of every request (--metrics prometheus: "
            "tts_request_duration_seconds, tts_stage_duration_seconds, tts_errors_total).")


# -------------------------------------------------------------------------- --compare A B

MIN_SAMPLES = 5  # per side: below it, no verdict
ALPHA = 0.05  # two-sided significance level of the rank test
MIN_EFFECT = 0.05  # and the medians must differ by at least 5%: a tiny shift is "no change"


def parse_side(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ReportError(f"--compare {text!r}: expected KEY=VALUE, e.g. service.version=1.0")
    return key.strip(), value.strip()


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation with tie correction):
    do the two samples come from the same distribution? Chosen over a t-test because stage
    latencies are skewed (long tails), and the test needs no distribution assumption."""
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        return 1.0  # nothing to rank against: no evidence of a difference
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks_a, ties, i = 0.0, 0.0, 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1  # the average rank of a run of ties
        count = j - i + 1
        ties += count ** 3 - count
        ranks_a += rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        i = j + 1
    u = ranks_a - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)  # continuity correction
    return max(0.0, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2))))


@dataclass
class StageComparison:
    stage: str
    a: StageStats | None
    b: StageStats | None

    def delta(self, stat: str) -> float | None:
        """(B - A) / A for p50 or p95; None if a side is missing or A is zero."""
        if not self.a or not self.b or not self.a.durations or not self.b.durations:
            return None
        base = self.a.stat(stat)
        return (self.b.stat(stat) - base) / base if base else None

    @property
    def p_value(self) -> float | None:
        if not self.a or not self.b:
            return None
        return mann_whitney_p(self.a.durations, self.b.durations)

    @property
    def verdict(self) -> str:
        if not self.a or not self.b or min(len(self.a.durations),
                                            len(self.b.durations)) < MIN_SAMPLES:
            return "too few samples"
        delta, p = self.delta("p50"), self.p_value
        if delta is None or p is None or p >= ALPHA or abs(delta) < MIN_EFFECT:
            return "no significant change"
        return "faster" if delta < 0 else "slower"


def compare(groups: dict[str, GroupStats], a: str, b: str) -> list[StageComparison]:
    """Per stage, side A against side B (groups from ``analyse(traces, by=KEY)``)."""
    ga, gb = groups.get(a), groups.get(b)
    names = [n for n in _stage_order({k: g for k, g in ((a, ga), (b, gb)) if g is not None})]
    return [StageComparison(n, ga.stages.get(n) if ga else None,
                            gb.stages.get(n) if gb else None) for n in names]


def _cell(st: StageStats | None) -> str:
    if st is None or not st.durations:
        return "-"
    return f"{_fmt_us(st.stat('p50'))} / {_fmt_us(st.stat('p95'))}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def compare_text(rows: list[StageComparison], key: str, a: str, b: str,
                 groups: dict[str, GroupStats]) -> str:
    counts = {side: len(groups[side].requests) if side in groups else 0 for side in (a, b)}
    lines = [f"compare {key}: A={a} ({counts[a]} requests) vs B={b} ({counts[b]} requests)",
             f"{'stage':34s} {'A p50 / p95':>22s} {'B p50 / p95':>22s} {'d p50':>8s} "
             f"{'d p95':>8s}  verdict"]
    for row in rows:
        lines.append(f"{row.stage:34s} {_cell(row.a):>22s} {_cell(row.b):>22s} "
                     f"{_pct(row.delta('p50')):>8s} {_pct(row.delta('p95')):>8s}  {row.verdict}")
    lines.append(f"(verdict: Mann-Whitney U, two-sided p < {ALPHA}, and medians apart by at least "
                 f"{100 * MIN_EFFECT:.0f}%; at least {MIN_SAMPLES} samples a side)")
    return "\n".join(lines)


def compare_dict(rows: list[StageComparison], key: str, a: str, b: str,
                 groups: dict[str, GroupStats]) -> dict[str, Any]:
    def side(st: StageStats | None) -> dict[str, float] | None:
        return None if st is None else {"count": len(st.durations), "p50_us": st.stat("p50"),
                                        "p95_us": st.stat("p95")}

    return {"key": key, "a": a, "b": b,
            "requests": {a: len(groups[a].requests) if a in groups else 0,
                         b: len(groups[b].requests) if b in groups else 0},
            "stages": {row.stage: {"a": side(row.a), "b": side(row.b),
                                   "delta_p50": row.delta("p50"), "delta_p95": row.delta("p95"),
                                   "p_value": row.p_value, "verdict": row.verdict}
                       for row in rows}}


def unknown_stages(rules: list[Rule], groups: dict[str, GroupStats]) -> list[Rule]:
    """The rules naming a stage neither the schema nor the traces know (``vocodr.p95>1s``: a
    cron alert with a typo would never fire)."""
    seen = {name for group in groups.values() for name in group.stages}
    return [rule for rule in rules if rule.stage != "errors" and rule.stage not in seen
            and not s.known_stage(rule.stage)]


def by_note(groups: dict[str, GroupStats], by: str | None) -> str | None:
    """A line saying why ``--by TAG`` shows one group: no trace has the tag, or all have one
    value (else None)."""
    if not by or by == CONCURRENCY:
        return None
    keys = set(groups)
    if keys <= {"(none)"}:
        return f"--by {by}: no trace has this tag; nothing to group by"
    if len(keys - {"(none)"}) == 1:
        return f"--by {by}: every trace that has it says {sorted(keys - {'(none)'})[0]}: one group"
    return None


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
        # a mode's frontend (tts_frontend.sft, ...) where the schema has tts_frontend.<mode>;
        # a stage of its own under the same prefix (tts_frontend.text_normalize) keeps its place
        generic = name if name in order else re.sub(r"^tts_frontend\..*", "tts_frontend.<mode>",
                                                     name)
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
            "playback": group.playback(),
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
            cells = [f"{_fmt_us(cell.stat('p50'))} / {_fmt_us(cell.stat('p95'))}"
                     if (cell := groups[k].stages.get(name)) else "-" for k in keys]
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
        heard = group.playback()
        if heard["streamed"]:
            line = (f"{prefix}playback: {heard['stalled']} of {heard['streamed']} requests "
                    f"heard chunk by chunk stalled ({100 * heard['share']:.1f}%)")
            if heard["by_part"]:
                line += "; late chunk's time in: " + ", ".join(
                    f"{part} {count}" for part, count in heard["by_part"].items())
            lines.append(line + f"; stall p95 {heard['stall_ms_p95']:.0f} ms")
        lines.append(f"{prefix}slowest requests:")
        lines += [f"  {_fmt_us(d):>10s}  {zipkin_ui}/zipkin/traces/{t}"
                  for d, t in group.requests[:slowest]]
    return "\n".join(lines)


COLORS = ("#4a7bd0", "#e08a2c")  # series A (or the only one), series B
ERROR_COLOR = "#d04a4a"
_DECADES = ((1e3, "1 ms"), (1e4, "10 ms"), (1e5, "100 ms"), (1e6, "1 s"), (1e7, "10 s"),
            (1e8, "100 s"))


def _svg_open(width: int, height: int, label: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"role='img' aria-label='{html.escape(label)}' font-family='sans-serif' "
            "font-size='12'>")


def distribution_svg(stages: list[str], series: list[tuple[str, dict[str, StageStats]]]) -> str:
    """Per stage, one box per series on a log time axis: box p25-p75, line at p50, whiskers
    p5-p95, a dot at p99. Stages differ by orders of magnitude, hence the log scale."""
    values = [st.stat(q) for _, by in series for n in stages if (st := by.get(n)) is not None
              and st.durations for q in ("p5", "p99")]
    values = [v for v in values if v > 0]
    if not values:
        return ""
    lo, hi = math.log10(min(values)) - 0.1, math.log10(max(values)) + 0.1
    left, width, row = 300, 560, 14 * len(series) + 8
    height = row * len(stages) + 40

    def x(us: float) -> float:
        return left + width * (math.log10(max(us, 1.0)) - lo) / max(hi - lo, 1e-9)

    out = [_svg_open(left + width + 20, height, "latency distribution per stage")]
    for value, name in _DECADES:
        if lo <= math.log10(value) <= hi:
            out.append(f"<line x1='{x(value):.1f}' y1='0' x2='{x(value):.1f}' "
                       f"y2='{height - 30}' stroke='#ddd'/><text x='{x(value):.1f}' "
                       f"y='{height - 16}' text-anchor='middle'>{name}</text>")
    for i, stage in enumerate(stages):
        top = i * row + 4
        out.append(f"<text x='0' y='{top + row / 2 + 4:.0f}'>{html.escape(stage)}</text>")
        for j, (label, by) in enumerate(series):
            st = by.get(stage)
            if st is None or not st.durations:
                continue
            y, color = top + j * 14, COLORS[j % len(COLORS)]
            p5, p25, p50, p75, p95, p99 = (st.stat(q) for q in
                                           ("p5", "p25", "p50", "p75", "p95", "p99"))
            out.append(
                f"<g><title>{html.escape(label)} {html.escape(stage)}: p50 {_fmt_us(p50)}, "
                f"p95 {_fmt_us(p95)}, p99 {_fmt_us(p99)}</title>"
                f"<line x1='{x(p5):.1f}' y1='{y + 6}' x2='{x(p95):.1f}' y2='{y + 6}' "
                f"stroke='{color}'/>"
                f"<rect x='{x(p25):.1f}' y='{y}' width='{max(x(p75) - x(p25), 2):.1f}' "
                f"height='12' fill='{color}'/>"
                f"<line x1='{x(p50):.1f}' y1='{y}' x2='{x(p50):.1f}' y2='{y + 12}' "
                f"stroke='#000' stroke-width='2'/>"
                f"<circle cx='{x(p99):.1f}' cy='{y + 6}' r='3' fill='{color}'/></g>")
    legend = " ".join(f"<tspan fill='{COLORS[j % len(COLORS)]}'>&#9632; {html.escape(label)}"
                      "</tspan>" for j, (label, _) in enumerate(series))
    out.append(f"<text x='{left}' y='{height - 2}'>{legend} (box p25-p75, line p50, whiskers "
               "p5-p95, dot p99)</text></svg>")
    return "".join(out)


def timeline_svg(group: GroupStats, buckets: int = 24) -> str:
    """Over the lookback: request p95 (bars) and error count (red bars below) per time bucket."""
    if not group.timeline:
        return ""
    start = min(t for t, _, _ in group.timeline)
    span = max(max(t for t, _, _ in group.timeline) - start, 1)
    slots: list[list[tuple[float, bool]]] = [[] for _ in range(buckets)]
    for t, duration, failed in group.timeline:
        slots[min(buckets - 1, (t - start) * buckets // span)].append((duration, failed))
    p95s = [percentile(sorted(d for d, _ in slot), 95) if slot else 0.0 for slot in slots]
    errors = [sum(f for _, f in slot) for slot in slots]
    top, err_h, bar_w, left = max(p95s) or 1.0, 40, 24, 60
    out = [_svg_open(left + buckets * bar_w + 20, 200 + err_h + 40, "request p95 and errors "
                     "over time")]
    out.append(f"<text x='0' y='12'>p95 {_fmt_us(top)}</text><text x='0' y='{200 + 24}' "
               f"fill='{ERROR_COLOR}'>errors</text>")
    for i, (p95, err) in enumerate(zip(p95s, errors, strict=True)):
        h = 180 * p95 / top
        bx = left + i * bar_w
        out.append(f"<rect x='{bx}' y='{195 - h:.1f}' width='{bar_w - 4}' height='{h:.1f}' "
                   f"fill='{COLORS[0]}'><title>p95 {_fmt_us(p95)}</title></rect>")
        if err:
            eh = err_h * err / max(errors)
            out.append(f"<rect x='{bx}' y='{205}' width='{bar_w - 4}' height='{eh:.1f}' "
                       f"fill='{ERROR_COLOR}'><title>{err} errors</title></rect>")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(start / 1e6))
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime((start + span) / 1e6))
    out.append(f"<text x='{left}' y='{200 + err_h + 30}'>{when} .. {until}, "
               f"{buckets} buckets</text></svg>")
    return "".join(out)


_STYLE = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
          "td:first-child,th:first-child{text-align:left}</style>")


def to_html(groups: dict[str, GroupStats], zipkin_ui: str, title: str) -> str:
    """One self-contained page (no script, no network): per group the share of request time
    by stage, the latency distribution per stage, p95 and errors over time, and the tables."""
    esc = html.escape
    stages = [n for n in _stage_order(groups) if n not in (s.GRADIO_EVENT,)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             _STYLE, "</head><body>", f"<h1>{esc(title)}</h1>"]
    for key in sorted(groups):
        group = groups[key]
        parts.append(f"<h2>{esc(key)} &mdash; {len(group.requests)} requests</h2>")
        shares = [(n, group.share(n)) for n in stages if n in group.stages]
        width, bar_h = 640, 18
        svg = [_svg_open(width + 320, bar_h * len(shares) + 10, "stage breakdown")]
        for i, (name, share) in enumerate(shares):
            y = i * bar_h + 5
            svg.append(f"<text x='0' y='{y + 13}'>{esc(name)}</text>"
                       f"<rect x='300' y='{y}' width='{max(1, share * width):.1f}' "
                       f"height='{bar_h - 4}' fill='{COLORS[0]}'/>"
                       f"<text x='{305 + share * width:.1f}' y='{y + 13}'>"
                       f"{100 * share:.1f}%</text>")
        svg.append("</svg>")
        parts.append("<h3>Share of request time by stage</h3>" + "".join(svg))
        present = [n for n in stages if n in group.stages]
        parts.append("<h3>Latency distribution per stage</h3>"
                     + distribution_svg(present, [(key, group.stages)]))
        parts.append("<h3>Request p95 and errors over time</h3>" + timeline_svg(group))
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


def compare_html(rows: list[StageComparison], key: str, a: str, b: str,
                 groups: dict[str, GroupStats], title: str) -> str:
    """Both series in one chart per stage, then the table with deltas and verdicts."""
    esc = html.escape
    stages = [row.stage for row in rows if row.stage != s.GRADIO_EVENT]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             _STYLE, "</head><body>", f"<h1>{esc(title)}</h1>",
             f"<p>{esc(key)}: A = {esc(a)}, B = {esc(b)}</p>",
             distribution_svg(stages, [(f"A {a}", groups[a].stages),
                                       (f"B {b}", groups[b].stages)]),
             "<table><tr><th>stage</th><th>A p50 / p95</th><th>B p50 / p95</th>"
             "<th>&Delta; p50</th><th>&Delta; p95</th><th>verdict</th></tr>"]
    parts += [f"<tr><td>{esc(row.stage)}</td><td>{_cell(row.a)}</td><td>{_cell(row.b)}</td>"
              f"<td>{_pct(row.delta('p50'))}</td><td>{_pct(row.delta('p95'))}</td>"
              f"<td>{esc(row.verdict)}</td></tr>" for row in rows]
    parts.append(f"</table><p>Verdict: Mann-Whitney U, two-sided p &lt; {ALPHA}, medians at "
                 f"least {100 * MIN_EFFECT:.0f}% apart, {MIN_SAMPLES}+ samples a side.</p>"
                 "</body></html>")
    return "".join(parts)
