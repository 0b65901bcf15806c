"""What must not leave the process, learned on the request path, read when spans are exported.

Ground floor (standard library only): the extractors (instrumentation) write here, the
redacting exporter (sdk) reads. Two registries:

* **request texts, per trace** (``remember``): the synthesis, prompt and instruct texts, a
  speaker id the model does not list, streamed text pieces. Writing is a dict insert on the
  request thread; the mask (``pattern_for``: every form a text can take inside a message) is
  built at export, off the request path. An entry lives as long as its trace can still be
  exported: the newest ``MAX_TRACES`` traces (the SDK's batch queue holds at most 2048 spans),
  plus every trace keep-errors still holds (``pin``/``unpin``: it decides a trace only when the
  trace has ended, however many others started meanwhile); in all at most ``MAX_TEXT_BYTES`` of
  text, the oldest unpinned traces going first.
* **query names a route declares** (``declare_query_names``): the parameter names of the app's
  own API (FastAPI's declared query parameters, Gradio's ``session_hash``), the only query keys
  kept visible in a URL; every other key, and every bare item, is a string the client chose.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"  # what a masked text becomes (redaction.py, and our own log lines)
MAX_TRACES = 4096
MAX_TEXT_BYTES = 32 * 1024 * 1024
MIN_SUBSTRING = 4  # a form shorter than this is masked only as a whole token
MIN_WORD = 4  # words of a text masked on their own (a PIN "4321" is one)

_lock = threading.Lock()


class _Entry:
    __slots__ = ("texts", "pattern", "size")

    def __init__(self) -> None:
        self.texts: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        self.size = 0


_registry: OrderedDict[int, _Entry] = OrderedDict()
_pins: dict[int, int] = {}  # trace id -> holders (keep-errors) that may still export it
_bytes = 0


MAX_FOUND = 256  # texts one call's values may register (a request's inputs: a handful)
MAX_DEPTH = 4
MAX_BYTES_AS_TEXT = 64 * 1024  # bytes longer than this are audio, not a text to mask


def texts_in(values: Iterable[Any], found: list[str] | None = None, depth: int = 0) -> list[str]:
    """Every text a request's values hold: strings, bytes (decoded), file names (an upload's
    ``filename``), inside sequences, mappings and models (pydantic, dataclasses: their
    ``__dict__``), bounded in depth and count. Cheap: no copies of the texts."""
    found = [] if found is None else found
    for value in values:
        if len(found) >= MAX_FOUND:
            break
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, (bytes, bytearray)):
            if len(value) <= MAX_BYTES_AS_TEXT:
                found.append(bytes(value).decode("utf-8", "replace"))
        elif isinstance(value, (int, float)) or value is None or depth >= MAX_DEPTH:
            continue
        elif isinstance(value, dict):  # its values (keys are a schema's names: "path", "meta")
            texts_in(value.values(), found, depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            texts_in(value, found, depth + 1)
        else:
            name = getattr(value, "filename", None)  # an upload's file name is the client's
            if isinstance(name, str):
                found.append(name)
            fields = getattr(value, "__dict__", None)
            if isinstance(fields, dict) and (hasattr(value, "model_fields")
                                             or hasattr(value, "__dataclass_fields__")):
                texts_in(fields.values(), found, depth + 1)
    return found


def remember(trace_id: int, values: Iterable[Any]) -> None:
    """Register the request's own text values for masking in its trace (request thread: cheap).
    Strings are taken as they are; bytes, sequences, mappings and models are searched for
    texts (``texts_in``)."""
    global _bytes
    texts = [v for v in texts_in(values) if v.strip()]
    if not texts or not trace_id:
        return
    with _lock:
        entry = _registry.get(trace_id)
        if entry is None:
            entry = _registry[trace_id] = _Entry()
        else:
            _registry.move_to_end(trace_id)
        new = [text for text in texts if text not in entry.texts]
        if not new:
            return
        entry.texts.update(new)
        entry.pattern = None
        grown = sum(len(text) for text in new)
        entry.size += grown
        _bytes += grown
        _bound()


def _bound() -> None:
    """Drop the oldest traces no one pins until both bounds hold (under ``_lock``)."""
    global _bytes
    if len(_registry) <= MAX_TRACES and _bytes <= MAX_TEXT_BYTES:
        return
    for trace_id in list(_registry):
        if len(_registry) <= MAX_TRACES and _bytes <= MAX_TEXT_BYTES:
            break
        if trace_id not in _pins:
            _bytes -= _registry.pop(trace_id).size


def pin(trace_id: int) -> None:
    """A holder (keep-errors) may export this trace later: keep its masks until ``unpin``."""
    with _lock:
        _pins[trace_id] = _pins.get(trace_id, 0) + 1


def unpin(trace_id: int) -> None:
    """The holder is done with the trace; its masks live on as the newest trace's would."""
    with _lock:
        holders = _pins.pop(trace_id, 0) - 1
        if holders > 0:
            _pins[trace_id] = holders
        if trace_id in _registry:
            _registry.move_to_end(trace_id)
        _bound()


def forget_all() -> None:
    """Empty the text registry (tests)."""
    global _bytes
    with _lock:
        _registry.clear()
        _pins.clear()
        _bytes = 0


def known(trace_id: int) -> bool:
    with _lock:
        return trace_id in _registry


def _encodings(text: str) -> set[str]:
    """The forms in which ``text`` can appear inside another string."""
    forms = {text, text.strip(), repr(text)[1:-1], ascii(text)[1:-1],
             json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1],
             quote(text, safe=""), quote_plus(text), quote(text)}
    # repr() picks the other quote when the text has one; both escapes occur in messages
    forms.add(text.replace("\\", "\\\\").replace("'", "\\'"))
    return {f for f in forms if f.strip()}


def build_pattern(texts: Iterable[str]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for text in texts:
        forms |= _encodings(text)
        for word in re.findall(r"\w+", text):
            if len(word) >= MIN_WORD:
                forms |= _encodings(word)
    if not forms:
        return None
    parts = []
    for form in sorted(forms, key=len, reverse=True):  # longest first: masked whole
        escaped = re.escape(form)
        if len(form) < MIN_SUBSTRING or re.fullmatch(r"\w+", form):
            escaped = rf"(?<!\w){escaped}(?!\w)"
        parts.append(escaped)
    return re.compile("|".join(parts))


def pattern_for(trace_id: int) -> re.Pattern[str] | None:
    """The mask of a trace's registered texts (built once, at export), or None."""
    with _lock:
        entry = _registry.get(trace_id)
        if entry is None:
            return None
        if entry.pattern is None:
            entry.pattern = build_pattern(entry.texts)
        return entry.pattern


# ----------------------------------------------------------------- the app's own query names

_declared: dict[str, frozenset[str]] = {}
MAX_ROUTES = 10_000


def declare_query_names(route: str, names: Iterable[str]) -> None:
    """The query parameters ``route`` (a route template) declares as its API."""
    with _lock:
        if route in _declared or len(_declared) < MAX_ROUTES:
            _declared[route] = frozenset(_declared.get(route, frozenset()) | set(names))


def declared_query_names(route: str | None) -> frozenset[str]:
    if route is None:
        return frozenset()
    with _lock:
        return _declared.get(route, frozenset())
