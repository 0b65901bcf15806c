"""No private content leaves the process, whatever the exporter.

``RedactingSpanExporter`` sits in front of EVERY exporter the configurator installs (Zipkin,
OTLP, the Zipkin file, console, and any added later): it hands the exporter redacted copies
of the spans, so no exporter can skip it, and the exporter encodes them once. It applies:

* **query strings**: in URL-like attributes (``http.url``, ``url.full``, ``http.target``,
  ``url.query``, ...) every value becomes ``REDACTED``, and so does every key and bare item
  (``?SECRET``) but the names the matched route declares as its API
  (``masking.declare_query_names``: FastAPI's declared query parameters, Gradio's own);
* **raw paths** of SERVER spans: the path becomes the route template when the framework
  matched one (``/synthesize/{name}``, Gradio's ``/file={path}``), ``/{unmatched}`` when it
  did not (a 404 path is whatever the client typed);
* **content-aware masking**: the stage extractors register the request's own texts (synthesis,
  prompt, instruct text, a speaker id the model does not list) under the trace id
  (``masking.remember``: a dict insert on the request thread; everything else happens at
  export, off the request path). Each text is masked in the
  forms in which it can appear in a message: as is, ``repr``-escaped, JSON-escaped (ASCII and
  not), URL-encoded, and its words of 4+ characters. Short texts are masked too, as whole
  tokens, so ``"a"`` does not eat every other ``a``;
* ``http.user_agent`` / ``user_agent.original`` masked with ``--no-user-agent``.

What is never masked: OUR span names and attributes (stage names, counts, enumerations: the
extractors never write content), and structural HTTP/RPC keys (method, route, status, ports),
which hold no user content and must stay searchable. Our spans' events and status messages
(exception messages quote inputs) ARE masked.

Every value comes out as something every exporter can encode: bytes are decoded (and masked
like text), a mapping or a mixed sequence becomes JSON text (masked), and a value no exporter
can encode becomes a placeholder (``[unencodable TYPE]``); each value changed so is counted in
``cosyvoice_otel.values.replaced``: one odd value never fails a batch.

If redacting a batch fails, the batch is dropped (counted), never exported unredacted.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status

from cosyvoice_otel import masking
from cosyvoice_otel.masking import MASK, declared_query_names
from cosyvoice_otel.schema import known_reason
from cosyvoice_otel.sdk.lifecycle import quiet_io

logger = logging.getLogger("cosyvoice_otel.export")

MAX_DEPTH = 8  # nesting of a compound value rendered as JSON
UNMATCHED_PATH = "/{unmatched}"
OUR_SCOPE = "cosyvoice_otel"
URL_KEYS = frozenset({"http.url", "url.full", "http.target", "url.query", "http.request.uri"})
PATH_KEYS = frozenset({"http.target", "url.path", "http.url", "url.full"})
USER_AGENT_KEYS = frozenset({"http.user_agent", "user_agent.original"})
# Values that are ours or structural: never user content, and masking would corrupt them.
UNMASKED_KEYS = frozenset({
    "gradio.batch.trace_ids", "http.method", "http.request.method", "http.route",
    "http.scheme", "url.scheme", "http.status_code", "http.response.status_code",
    "http.flavor", "network.protocol.version", "net.host.port", "net.peer.port",
    "server.port", "client.port", "rpc.system", "rpc.service", "rpc.method",
    "rpc.grpc.status_code", "otel.status_code",
})
# ``error.type`` is a reason the schema lists, a declared one, or an exception's class name;
# an undeclared ``fail()`` reason is whatever string the app passed (the request text, even):
# masked like any value, on our spans too (their other attributes are ours: never content)
ERROR_TYPE = "error.type"


def redact_query(value: str, keep: frozenset[str] = frozenset()) -> str:
    """Every query VALUE masked; a query KEY kept only when the route declares it as its API
    (``keep``), else masked too, like a bare item (``/x?SECRET``): clients choose them."""
    path, sep, query = value.partition("?")
    if not sep:
        if "=" not in value and "&" not in value:
            return value  # no query here (a plain path)
        path, query = "", value  # a bare query string (url.query)
    query, hash_sep, _fragment = query.partition("#")
    items = []
    for item in re.split(r"([&;])", query):
        if item in ("&", ";", ""):
            items.append(item)
            continue
        key, eq, _ = item.partition("=")
        name = key if unquote_plus(key) in keep else "REDACTED"
        items.append(f"{name}=REDACTED" if eq else name)
    return path + sep + "".join(items) + ("#REDACTED" if hash_sep else "")


def mask(value: str, pattern: re.Pattern[str] | None) -> str:
    return pattern.sub(MASK, value) if pattern is not None else value


def _placeholder(value: Any) -> str:
    """What stands for a value no exporter can encode: its type, never its content."""
    return f"[unencodable {type(value).__name__}]"


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data: bytes decoded, mappings' keys as strings, NaN and inf as
    strings (JSON has none), anything else by its type name; nesting bounded."""
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if depth >= MAX_DEPTH:
        return f"[nested {type(value).__name__}]"
    if isinstance(value, Mapping):
        return {str(_jsonable(k, depth + 1)): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item, depth + 1) for item in value]
    return _placeholder(value)


def _json(value: Any) -> str:
    """A compound value (a mapping, an item of a mixed sequence) as one JSON string."""
    if isinstance(value, str):
        return value
    return json.dumps(_jsonable(value), ensure_ascii=False, sort_keys=True, default=str)


def _as_bytes_text(values: Sequence[Any]) -> str | None:
    """A sequence of byte values (what the SDK makes of a ``bytearray``) as the UTF-8 text
    they spell, or None."""
    if len(values) < masking.MIN_SUBSTRING or not all(
            type(v) is int and 0 <= v < 256 for v in values):
        return None
    try:
        return bytes(values).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _number(value: Any) -> Any:
    """A numeric value of another type (numpy, an enum) as the plain type it stands for."""
    for plain in (bool, int, float):
        if isinstance(value, plain):
            return plain(value)
    return value


def _differs(new: Any, old: Any) -> bool:
    try:
        return bool(new != old)
    except Exception:  # noqa: BLE001 - an odd type's comparison: take it as changed
        return True


def _replace_path(key: str, value: str, route: str | None) -> str:
    """The raw request path -> the route template, or a placeholder for an unmatched route."""
    template = route or UNMATCHED_PATH
    if key in ("http.url", "url.full"):
        parts = urlsplit(value)
        return urlunsplit((parts.scheme, parts.netloc, template, parts.query, ""))
    path, sep, query = value.partition("?")
    return template + sep + query if key == "http.target" else template


class Redactor:
    """Turns spans into redacted copies (the original is returned when nothing changes)."""

    def __init__(self, keep_user_agent: bool = True) -> None:
        self.keep_user_agent = keep_user_agent
        self.placeholders = 0  # values no exporter could encode, exported as a placeholder

    def _value(self, key: str, value: Any, pattern: re.Pattern[str] | None,
               server: bool, route: str | None) -> Any:
        kind = type(value)
        if kind is str:
            if key in UNMASKED_KEYS or (key == ERROR_TYPE and known_reason(value)):
                return value
            if key in USER_AGENT_KEYS and not self.keep_user_agent:
                return MASK
            if server and key in PATH_KEYS:
                value = _replace_path(key, value, route)
            if key in URL_KEYS:
                value = redact_query(value, declared_query_names(route) if server
                                     else frozenset())
            return mask(value, pattern)
        if kind is bool or kind is int or kind is float:
            return value  # numbers and booleans hold no text (NaN and inf included)
        return self._other(key, value, pattern, server, route)

    def _other(self, key: str, value: Any, pattern: re.Pattern[str] | None,
               server: bool, route: str | None) -> Any:
        """Every other value an app or an extractor can carry (the SDK keeps bytes, None,
        mappings and mixed sequences as they are; a bytearray becomes a tuple of its byte
        values): bytes (the request text as ``text.encode()``), sequences of any mix,
        mappings, nested, anything else. The result is what every exporter can encode: a
        string, or a homogeneous tuple of primitives; whatever text it holds is masked like
        any string. A value changed for an exporter's sake is counted (``placeholders``)."""
        if isinstance(value, str):  # a str subclass
            return self._value(key, str(value), pattern, server, route)
        if isinstance(value, (bool, int, float)):  # a subclass: an IntEnum, a numpy float
            return _number(value)
        if isinstance(value, (list, tuple)):
            text = _as_bytes_text(value) if pattern is not None else None
            if pattern is not None and text is not None and pattern.search(text):
                self.placeholders += 1  # a text's bytes as numbers: masked as the text
                return pattern.sub(MASK, text)
            items = [self._value(key, item, pattern, server, route) for item in value]
            kinds = {type(item) for item in items}
            if len(kinds) <= 1 and kinds <= {str, bool, int, float}:
                return tuple(items)  # homogeneous primitives: a sequence attribute still
            self.placeholders += 1
            return tuple(item if isinstance(item, str) else _json(item) for item in items)
        if type(value).__module__ == "numpy" and hasattr(value, "item"):  # a numpy scalar
            return self._value(key, value.item(), pattern, server, route)
        self.placeholders += 1  # no exporter encodes it as it is: text, masked
        if isinstance(value, (bytes, bytearray, memoryview)):
            return mask(bytes(value).decode("utf-8", "replace"), pattern)
        if isinstance(value, Mapping):
            return mask(_json(value), pattern)
        if value is None:  # the SDK keeps None now; no exporter agrees on it
            return "null"
        return _placeholder(value)

    def _attributes(self, attributes: Mapping[str, Any] | None, pattern: re.Pattern[str] | None,
                    server: bool = False) -> dict[str, Any] | None:
        """A redacted copy, or None when nothing changes (the SDK returns a new read-only
        view on every access, so identity says nothing)."""
        if not attributes:
            return None
        route = attributes.get("http.route") if server else None
        changed: dict[str, Any] | None = None
        for key, value in attributes.items():
            counted = self.placeholders
            try:
                new = self._value(key, value, pattern, server, route)
            except Exception:  # noqa: BLE001 - one hostile value: its placeholder, not the batch
                self.placeholders = counted + 1  # once, whatever it counted before it failed
                new = _placeholder(value)
            # by identity and type first: a value of an odd type may not compare to a bool
            if new is not value and (type(new) is not type(value) or _differs(new, value)):
                if changed is None:
                    changed = dict(attributes)
                changed[key] = new
        return changed

    def _name(self, span: ReadableSpan, pattern: re.Pattern[str] | None) -> str:
        name = span.name
        attributes = span.attributes or {}
        if span.kind is SpanKind.SERVER:
            # plain ASGI names a span "GET /the/raw/path": use the route or the placeholder
            raw = str(attributes.get("url.path") or "") or \
                str(attributes.get("http.target", "")).split("?")[0]
            route = attributes.get("http.route")
            if raw and raw != route and raw in name:
                name = name.replace(raw, str(route or UNMATCHED_PATH))
        return mask(name, pattern)

    def redact(self, span: ReadableSpan) -> ReadableSpan:
        pattern = masking.pattern_for(span.context.trace_id) if span.context else None
        scope = span.instrumentation_scope
        ours = scope is not None and scope.name == OUR_SCOPE
        server = span.kind is SpanKind.SERVER
        if ours:  # our extractors write no content; a reason the app passed may be
            reason = (span.attributes or {}).get(ERROR_TYPE)
            masked = self._attributes({ERROR_TYPE: reason}, pattern) if reason else None
            attributes = {**(span.attributes or {}), **masked} if masked else None
        else:
            attributes = self._attributes(span.attributes, pattern, server)
        name = span.name if ours else self._name(span, pattern)
        events = span.events
        new_events = []
        events_changed = False
        for event in events:
            event_name = mask(event.name, pattern)
            event_attrs = self._attributes(event.attributes, pattern)
            if event_name != event.name or event_attrs is not None:
                events_changed = True
                event = Event(event_name, event.attributes if event_attrs is None
                              else event_attrs, event.timestamp)
            new_events.append(event)
        status = span.status
        if status.description:
            description = mask(status.description, pattern)
            if description != status.description:
                status = Status(status.status_code, description)
        if (attributes is None and name == span.name and not events_changed
                and status is span.status):
            return span
        return ReadableSpan(
            name=name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=span.attributes if attributes is None else attributes,
            events=new_events if events_changed else events,
            links=span.links, kind=span.kind, status=status, start_time=span.start_time,
            end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)


class RedactingSpanExporter(SpanExporter):
    """Redacts, then hands the copies to ``inner``. Shared by several processors (the batch
    processor and keep-errors): exports are serialized, and ``inner`` is shut down when its
    last user shuts down."""

    def __init__(self, inner: SpanExporter, keep_user_agent: bool = True) -> None:
        self.inner = inner
        self.redactor = Redactor(keep_user_agent)
        self._lock = threading.Lock()
        self._users = 1
        # what the inner exporter answered (the health metrics read these, health.py)
        self.counters = {"redaction_failed": 0, "exported": 0, "failed": 0, "failed_exports": 0,
                         "placeholders": 0}

    def share(self) -> RedactingSpanExporter:
        with self._lock:
            self._users += 1
        return self

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            redacted = [self.redactor.redact(span) for span in spans]
            self.counters["placeholders"] = self.redactor.placeholders
        except Exception as exc:  # noqa: BLE001 - never export what we could not redact
            self.counters["redaction_failed"] += len(spans)
            if self.counters["redaction_failed"] == len(spans):  # the first time only
                logger.warning("cosyvoice-otel: redaction failed (%s: %s); batch dropped",
                               type(exc).__name__, exc)
            return SpanExportResult.FAILURE
        with self._lock, quiet_io():  # a flush on the app's thread logs no HTTP either
            result = self.inner.export(redacted)
            if result is SpanExportResult.SUCCESS:
                self.counters["exported"] += len(spans)
            else:
                self.counters["failed"] += len(spans)
                self.counters["failed_exports"] += 1
            return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.inner.shutdown()
