"""Check a synthesis trace read back from Zipkin against the tracing schema.

``check_synthesis(spans, mode, stream)`` returns a list of problems (empty = the trace is
complete): the expected stage spans are there, every span's parent is in the trace, parent
names follow the schema, children lie inside their parents in time, required attributes are
present. Used by the tests and by ``cosyvoice-traced verify``.
"""

from __future__ import annotations

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.zipkin import normalize

Span = dict
# Zipkin keeps microseconds; the SDK's clock reads and the JSON rounding allow this much slack.
TIME_SLACK_US = 1000
PROMPT_MODES = {"zero_shot", "cross_lingual", "instruct2", "vc"}


def expected_stages(mode: str, cached_speaker: bool = False,
                    streamed_text: bool = False) -> set[str]:
    """The stage spans a request of ``mode`` must have. A cached speaker
    (``zero_shot_spk_id``) replaces the prompt audio, so its stages are rightly absent."""
    names = {s.INFERENCE, f"tts_frontend.{mode}", s.MODEL_TTS, s.TOKEN2WAV, s.FLOW, s.VOCODER}
    if mode != "vc":
        names |= {s.TEXT_NORMALIZE, s.ACOUSTIC_MODEL}
    if streamed_text:
        names.add(s.TEXT_STREAM)
    if mode in PROMPT_MODES and not cached_speaker:
        names |= {"audio_preprocess.speech_tokenizer", "audio_preprocess.speech_feat",
                  "audio_preprocess.speaker_embedding"}
    return names


def _defs() -> dict[str, s.SpanDef]:
    defs = {d.name: d for d in s.SPANS}
    for mode in s.MODES:
        defs[f"tts_frontend.{mode}"] = defs["tts_frontend.<mode>"]
    return defs


def _parent_ok(parent_name: str, allowed: tuple[str, ...]) -> bool:
    for rule in allowed:
        if rule.startswith("<"):
            return True  # any span (e.g. the HTTP server span) may be the parent
        if rule == parent_name:
            return True
        if "<mode>" in rule and parent_name.startswith(rule.split("<mode>")[0]):
            return True
    return False


def check_synthesis(spans: list[Span], mode: str, stream: bool | None = None) -> list[str]:
    spans = normalize(spans)  # a span without a name, tags or times is judged, not a crash
    problems: list[str] = []
    by_id = {span["id"]: span for span in spans}
    names = {span["name"] for span in spans}
    inferences = [span for span in spans if span["name"] == s.INFERENCE]
    tags = inferences[0].get("tags", {}) if inferences else {}
    missing = expected_stages(mode, s.ZERO_SHOT_SPK_ID in tags,
                              tags.get(s.TEXT_STREAMED) == "true") - names
    if missing:
        problems.append(f"missing stage spans: {', '.join(sorted(missing))}")
    if len(inferences) != 1:
        problems.append(f"expected 1 {s.INFERENCE} span, found {len(inferences)}")
    for span in inferences:
        tags = span.get("tags", {})
        if tags.get(s.MODE) != mode:
            problems.append(f"{s.INFERENCE}: {s.MODE}={tags.get(s.MODE)!r}, expected {mode!r}")
        if stream is not None and tags.get(s.STREAM) != str(stream).lower():
            problems.append(f"{s.INFERENCE}: {s.STREAM}={tags.get(s.STREAM)!r}, expected {stream}")
    defs = _defs()
    for span in spans:
        definition = defs.get(span["name"])
        if definition is None:
            continue  # HTTP spans and others: not ours to judge
        parent = by_id.get(span.get("parentId", ""))
        if parent is None:
            problems.append(f"{span['name']} ({span['id']}): parent {span.get('parentId')} is not "
                            "in the trace")
            continue
        if not _parent_ok(parent["name"], definition.parents):
            problems.append(f"{span['name']}: parent is {parent['name']}, expected one of "
                            f"{', '.join(definition.parents)}")
        if span.get("kind") != "CONSUMER":  # a queued run starts after its enqueuer answered
            start, end = span["timestamp"], span["timestamp"] + span.get("duration", 0)
            p_start = parent["timestamp"]
            p_end = p_start + parent.get("duration", 0)
            if start < p_start - TIME_SLACK_US or end > p_end + TIME_SLACK_US:
                problems.append(f"{span['name']} [{start}, {end}] lies outside its parent "
                                f"{parent['name']} [{p_start}, {p_end}]")
        tags = span.get("tags", {})
        for attr in definition.attributes:
            if attr.required and attr.name not in tags:
                problems.append(f"{span['name']}: required attribute {attr.name} missing")
    return problems


def single_trace(spans: list[Span]) -> bool:
    return len({span.get("traceId") for span in spans}) <= 1
