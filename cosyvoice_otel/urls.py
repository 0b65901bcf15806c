"""Endpoint URLs as shown to people: credentials never printed.

An endpoint may carry user-info (``http://user:secret@zipkin:9411/api/v2/spans``: a Zipkin
behind a proxy with basic auth). Every line we print (the startup warning, "not taking spans",
``--debug``, ``doctor``) shows it as ``http://***@zipkin:9411/...``; ``split_credentials``
gives the URL without them and the ``Authorization`` header they stand for, for clients
(urllib) that do not read user-info themselves.
"""

from __future__ import annotations

from typing import Any

# urllib and base64 are imported when a URL has user-info (rare): settings imports this module
# on the launcher's startup path, which is kept light (BENCHMARKS.md).


def shown(url: Any) -> Any:
    """``url`` with any user-info replaced by ``***`` (anything not a string as it is)."""
    if not isinstance(url, str) or "@" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"  # not a URL we can read: nothing of it is shown
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL without user-info, the ``Authorization: Basic`` value it carried, or None)."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return (urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)),
            f"Basic {token}")
