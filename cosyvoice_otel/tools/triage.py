"""From a complaint to its cause: ``cosyvoice-traced triage --at "yesterday 15:00"``.

For every failed or refused request in a window around a time (or one trace), where it stopped
and why, from the traces alone:

* **gateway auth**: the gateway answered 401/403/407 and its auth step (Traefik's
  ``forwardauth``/``basicauth``...) ran but nothing was proxied;
* **rate limit**: a 429 with the gateway's rate-limit step (``ratelimiter``/``inflightreq``)
  and nothing proxied;
* **upstream unavailable**: the gateway answered 502/503/504 and no app span answered it;
* **a CosyVoice stage**: the deepest span with a normalised ``error.type`` (the schema's
  reasons: ``text_too_long``, ``asr_empty_result``, an exception class...), with the prompt
  audio's figures when the prompt is the suspect (a prompt stage failed, or the reason is one
  the prompt causes);
* **the app**: an HTTP error of the app's without a failing stage (a 400 of its own checks).

A request that succeeded is not listed. Nothing here reads a request's content: spans hold
none (redaction), only names, codes, reasons and figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.report import _number, prompt_figures
from cosyvoice_otel.tools.zipkin import ZipkinError, normalize

# a gateway's middleware steps by span name (Traefik v3 with traceVerbosity: detailed)
AUTH_STEPS = ("forwardauth", "basicauth", "digestauth")
LIMIT_STEPS = ("ratelimiter", "inflightreq")
PROXY_STEPS = ("reverseproxy",)
# reasons a prompt causes: its figures are shown beside them
PROMPT_REASONS = ("asr_empty_result", "invalid_input_duration")

CAUSES = ("gateway auth", "rate limit", "upstream unavailable", "stage", "app")


@dataclass
class Finding:
    trace_id: str
    timestamp_us: int
    where: str  # "gateway auth", "rate limit", "upstream unavailable", a stage name, "app"
    cause: str  # one of CAUSES
    status: str  # the HTTP status the caller got ("" when no span says)
    reason: str  # the normalised error reason ("" when none was recorded)
    link: str
    prompt: dict[str, str] = field(default_factory=dict)


def _status(span: dict) -> str:
    tags = span["tags"]
    return str(tags.get("http.response.status_code") or tags.get("http.status_code") or "")


def _children(spans: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for span in spans:
        out.setdefault(span.get("parentId") or "", []).append(span)
    return out


def _top(spans: list[dict]) -> dict:
    """The request's entry: the earliest SERVER span whose parent is not in the trace (the
    gateway's, or the app's when nothing is in front), else the earliest span."""
    ids = {span["id"] for span in spans}
    entries = [span for span in spans if span.get("kind") == "SERVER"
               and span.get("parentId") not in ids]
    return min(entries or spans, key=lambda span: span["timestamp"])


def _answered(spans: list[dict], top: dict) -> bool:
    """Did an app answer the proxied call? A span under the gateway's proxy step (the app's
    server span); without such steps, any SERVER span besides the entry's."""
    proxies = {span["id"] for span in spans if span["name"] in PROXY_STEPS}
    if proxies:
        return any(span.get("parentId") in proxies for span in spans)
    return any(span.get("kind") == "SERVER" and span is not top for span in spans)


def classify(spans: Any, zipkin_ui: str = "") -> Finding | None:
    """Where one request stopped, or None when it succeeded (or the trace holds no span)."""
    try:
        spans = normalize(spans)
    except ZipkinError:  # not a list of spans: nothing to say of it
        return None
    if not spans:
        return None
    top = _top(spans)
    status = _status(top)
    code = int(status) if status.isdigit() else 0
    children = _children(spans)
    names = {span["name"] for span in spans}
    proxied = any(span["name"] in PROXY_STEPS for span in spans)
    failed = [span for span in spans if s.ERROR_TYPE in span["tags"]]
    # the deepest failure: one none of whose children failed too
    deepest = [span for span in failed if not any(
        s.ERROR_TYPE in child["tags"] for child in children.get(span["id"], ()))]
    trace_id = top["traceId"]
    finding = Finding(trace_id, top["timestamp"], "", "", status, "",
                      f"{zipkin_ui}/zipkin/traces/{trace_id}" if zipkin_ui else trace_id)
    if deepest:
        stage = max(deepest, key=lambda span: span["timestamp"])
        finding.where, finding.cause = stage["name"], "stage"
        finding.reason = stage["tags"][s.ERROR_TYPE]
        if stage["name"].startswith("audio_preprocess.") or finding.reason in PROMPT_REASONS \
                or stage["name"] == s.ASR:
            finding.prompt = prompt_figures(spans, failed)[0]
        return finding
    if code in (401, 403, 407) and not proxied and names & set(AUTH_STEPS):
        finding.where = finding.cause = "gateway auth"
    elif code == 429 and not proxied and names & set(LIMIT_STEPS):
        finding.where = finding.cause = "rate limit"
    elif code in (502, 503, 504) and not _answered(spans, top):
        finding.where = finding.cause = "upstream unavailable"
    elif code >= 400:
        finding.where = finding.cause = "app"
        finding.reason = f"http_{code}"
    else:
        return None
    return finding


def triage(traces: list[Any], zipkin_ui: str, start_us: int, end_us: int) -> list[Finding]:
    """The failed or refused requests whose entry began in [start_us, end_us), oldest first."""
    found = [f for f in (classify(spans, zipkin_ui) for spans in traces) if f is not None
             and start_us <= f.timestamp_us < end_us]
    return sorted(found, key=lambda f: f.timestamp_us)


REFUSED = ("gateway auth", "rate limit", "upstream unavailable")


def refused_before_synthesis(traces: list[Any]) -> dict[str, int]:
    """How many of a gateway's requests never reached synthesis, by cause (each cause listed,
    0 included): ``report --gateway``'s line beside the app's errors."""
    counts = Counter(f.cause for f in (classify(spans) for spans in traces) if f is not None)
    return {cause: counts.get(cause, 0) for cause in REFUSED}


def summary(findings: list[Finding]) -> dict[str, int]:
    """Count by where it stopped (a stage by its name), the most frequent first."""
    return dict(Counter(f.where for f in findings).most_common())


def local_time(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).astimezone().strftime(
        "%Y-%m-%d %H:%M:%S")


def to_text(findings: list[Finding], window: str) -> str:
    if not findings:
        return f"no failed or refused requests {window}\n"
    lines = [f"{len(findings)} failed or refused requests {window}:",
             f"{'time':19s}  {'stopped at':30s} {'status':6s} {'reason':24s} link"]
    for f in findings:
        prompt = (" prompt: " + ", ".join(f"{k}={v}" for k, v in sorted(f.prompt.items()))
                  if f.prompt else "")
        lines.append(f"{local_time(f.timestamp_us)}  {f.where[:30]:30s} {f.status or '-':6s} "
                     f"{(f.reason or '-')[:24]:24s} {f.link}{prompt}")
    lines.append("by cause: " + ", ".join(f"{where} {count}"
                                          for where, count in summary(findings).items()))
    return "\n".join(lines) + "\n"


def to_dict(findings: list[Finding], start_us: int, end_us: int) -> dict[str, Any]:
    return {"window": {"start": local_time(start_us), "end": local_time(end_us)},
            "requests": [asdict(f) for f in findings], "by_cause": summary(findings)}


# ------------------------------------------------------------------ --audio: a file to its trace

AUDIO_LOOKBACK_MS = 7 * 86_400_000  # Zipkin's in-memory store rarely holds more; a week


@dataclass
class AudioMatch:
    trace_id: str
    timestamp_us: int
    matched_by: str  # "file digest", "audio digest", "file name", "time and duration"
    audio_seconds: str
    end_reason: str
    link: str


def _audio_row(spans: list[dict], matched_by: str, zipkin_ui: str) -> AudioMatch:
    top = _top(spans)
    inference: dict = next((sp for sp in spans if sp["name"] == s.INFERENCE), {"tags": {}})
    trace_id = top.get("traceId", "")
    return AudioMatch(trace_id, int(top.get("timestamp", 0)), matched_by,
                      inference["tags"].get(s.AUDIO_SECONDS, ""),
                      inference["tags"].get(s.END_REASON, ""),
                      f"{zipkin_ui}/zipkin/traces/{trace_id}" if zipkin_ui else "")


def wav_facts(path: str) -> tuple[str | None, float | None]:
    """The sample-data digest of a WAV and its duration in seconds (None, None: not a WAV
    this can read)."""
    import os
    import stat
    import wave

    from cosyvoice_otel.instrumentation.audio_figures import open_wav
    from cosyvoice_otel.instrumentation.output_files import wav_digest

    if not stat.S_ISREG(os.stat(path).st_mode):
        return None, None  # a FIFO or a device: never waited on
    digest = wav_digest(path)
    try:
        with open_wav(path) as (wav, frames):
            rate = wav.getframerate()
        seconds = frames / rate if rate else None
    except (wave.Error, OSError, EOFError, ValueError):
        seconds = None  # a float WAV: the standard library reads PCM only
    return digest, seconds


def find_audio(client: Any, path: str, service: str | None, end_ms: int, window_ms: int,
               mtime_s: float) -> tuple[list[AudioMatch], float | None]:
    """The traces holding this file's digest (as written, or of the samples) or its name; when
    none does, the requests of ``service`` around the file's time whose audio lasted as long."""
    import os

    digest, seconds = wav_facts(path)
    found: dict[str, AudioMatch] = {}
    queries = []
    if digest:
        queries += [(f"{s.OUTPUT_FILE_DIGEST}={digest}", "file digest"),
                    (f"{s.OUTPUT_DIGEST}={digest}", "audio digest")]
    queries.append((f"{s.OUTPUT_FILE}={os.path.basename(path)}", "file name"))
    for query, how in queries:
        for spans in client.traces(service=service, annotation_query=query, end_ts_ms=end_ms,
                                   lookback_ms=AUDIO_LOOKBACK_MS, limit=100):
            row = _audio_row(spans, how, client.base_url)
            found.setdefault(row.trace_id, row)
    if found or seconds is None:
        return sorted(found.values(), key=lambda r: r.timestamp_us), seconds
    around = int(mtime_s * 1000) + window_ms // 2
    for spans in client.traces(service=service, end_ts_ms=around, lookback_ms=window_ms,
                               limit=10000):
        inference = next((sp for sp in spans if sp["name"] == s.INFERENCE), None)
        made = _number(inference["tags"].get(s.AUDIO_SECONDS, "")) if inference else None
        if made is not None and abs(made - seconds) <= max(0.05, 0.01 * seconds):
            row = _audio_row(spans, "time and duration", client.base_url)
            found.setdefault(row.trace_id, row)
    return sorted(found.values(), key=lambda r: r.timestamp_us), seconds


def audio_text(path: str, rows: list[AudioMatch], seconds: float | None) -> str:
    if not rows:
        how = (f"no request around the file's time made {seconds:.2f} s of audio"
               if seconds is not None else "it is not a WAV this can read (RIFF/WAVE)")
        return (f"no trace holds the digest or the name of {path}, and {how}. A re-encoded copy "
                "(mp3, resampled, normalised) keeps neither digest nor name: search by the "
                "time it was made (triage --at TIME --window 10m) and its duration "
                f"({s.AUDIO_SECONDS}).\n")
    lines = [f"{len(rows)} trace(s) for {path}"
             + (f" ({seconds:.2f} s)" if seconds is not None else "") + ":"]
    for row in rows:
        lines.append(f"{local_time(row.timestamp_us)}  {row.trace_id}  matched by "
                     f"{row.matched_by}; audio {row.audio_seconds or '?'} s, "
                     f"{row.end_reason or '?'}  {row.link}")
    if any(r.matched_by == "time and duration" for r in rows):
        lines.append("(no digest or name matched: these are candidates by time and duration "
                     "only)")
    return "\n".join(lines) + "\n"
