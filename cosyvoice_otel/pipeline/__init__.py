"""What happens to spans after they end: redaction and an export that never hurts the app.

``redaction`` masks URL query values and the request's own text; ``exporter`` sends Zipkin
JSON v2 with bounded timeouts, spools to disk while Zipkin is away and replays later.
"""
