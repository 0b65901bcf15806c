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
from cosyvoice_otel.tools.report import prompt_figures
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
