"""No private content leaves the process: URL query values and the request's own text are masked.

Two mechanisms, both applied to every span just before export (``exporter.py``):

* **query values**: in URL-like attributes (``http.url``, ``url.full``, ``http.target``,
  ``url.query``) every ``name=value`` becomes ``name=REDACTED`` (names are kept: they are the
  API's, not the user's);
* **content-aware masking**: the stage extractors register the request's own text values (the
  synthesis text, prompt text, instruct text) under the trace id (``remember``); any occurrence
  of them in ANY attribute or event of that trace (an exception message, a log event, a
  third-party span) is replaced by ``[REDACTED]``.

The registry is bounded (``MAX_TRACES`` traces, oldest forgotten first) and thread-safe.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
MAX_TRACES = 4096
MIN_SECRET = 4  # shorter strings ("a", "你好"?) would mask unrelated text; lengths still show
URL_KEYS = frozenset({"http.url", "url.full", "http.target", "url.query", "http.request.uri"})
_QUERY_VALUE = re.compile(r"(?P<key>[?&;][^=&#;]*=)[^&#;]*")

_lock = threading.Lock()
_secrets: OrderedDict[int, set[str]] = OrderedDict()


MIN_TOKEN = 8
# tags whose values are ids we generated: never text, and masking could corrupt them
ID_KEYS = frozenset({"gradio.batch.trace_ids"})


def _forms(text: str) -> set[str]:
    """A text, its escaped form (as repr() shows it in messages) and its longer words."""
    forms = {text, repr(text)[1:-1]}
    forms.update(word for word in re.split(r"[^\w-]+", text) if len(word) >= MIN_TOKEN)
    return {f for f in forms if len(f.strip()) >= MIN_SECRET}


def remember(trace_id: int, values: Iterable[Any]) -> None:
    """Register the request's own text values for masking in its trace."""
    texts = set()
    for value in values:
        if isinstance(value, str):
            texts |= _forms(value)
    if not texts or not trace_id:
        return
    with _lock:
        known = _secrets.setdefault(trace_id, set())
        known.update(texts)
        _secrets.move_to_end(trace_id)
        while len(_secrets) > MAX_TRACES:
            _secrets.popitem(last=False)


def secrets_for(trace_id: int) -> list[str]:
    with _lock:
        # longest first, so a text containing another is masked whole
        return sorted(_secrets.get(trace_id, ()), key=len, reverse=True)


def redact_query(value: str) -> str:
    if "?" not in value and "=" not in value:
        return value
    if "?" not in value:  # a bare query string (url.query)
        value = "?" + value
        return _QUERY_VALUE.sub(lambda m: m.group("key") + "REDACTED", value)[1:]
    return _QUERY_VALUE.sub(lambda m: m.group("key") + "REDACTED", value)


def mask(value: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in value:
            value = value.replace(secret, MASK)
    return value


def redact_encoded_span(span: dict, secrets: list[str]) -> dict:
    """Redact one Zipkin JSON v2 span (tags and annotations) in place; returns it."""
    tags = span.get("tags")
    if tags:
        for key, value in tags.items():
            if key in ID_KEYS:
                continue
            if key in URL_KEYS:
                value = redact_query(value)
            if secrets:
                value = mask(value, secrets)
            tags[key] = value
    if secrets:
        for annotation in span.get("annotations", ()):
            annotation["value"] = mask(annotation.get("value", ""), secrets)
        if "name" in span:
            span["name"] = mask(span["name"], secrets)
    return span
