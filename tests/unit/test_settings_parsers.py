"""The option table's value parsers at their edges: what is accepted, what becomes the one-line
error (a ValueError the CLI prints), and the derived values (cache root, metrics URL)."""

from __future__ import annotations

import pytest

from cosyvoice_otel import settings

OK, BAD = "ok", "bad"


@pytest.mark.parametrize(("parser", "text", "expected"), [
    (settings.parse_port, "1", 1),
    (settings.parse_port, "65535", 65535),
    (settings.parse_port, "0", BAD),
    (settings.parse_port, "65536", BAD),
    (settings.parse_bootstrap_servers, "kafka:9092, other:1", "kafka:9092,other:1"),
    (settings.parse_bootstrap_servers, "[::1]:9092", "[::1]:9092"),  # the LAST ':' is the port's
    (settings.parse_bootstrap_servers, ":9092", BAD),  # no host
    (settings.parse_bootstrap_servers, "kafka:0", BAD),
    (settings.parse_bootstrap_servers, "kafka", BAD),
    (settings.parse_host, "[::1]", "::1"),
    (settings.parse_host, "::1", "::1"),
    (settings.parse_host, "X.example", "X.example"),
    (settings.parse_host, "[abc", BAD),  # a bracket that does not close
    (settings.parse_host, "abc]", BAD),
    (settings.parse_host, "user@host", BAD),
    (settings.parse_seconds, "10s", 10),
    (settings.parse_seconds, "2500ms", 3),  # rounded up: never shorter than asked
    (settings.parse_seconds, "600", 600),
    (settings.parse_seconds, "601", BAD),
    (settings.parse_topic, "Zipkin-Spans_2.x", "Zipkin-Spans_2.x"),
    (settings.parse_topic, ".", BAD),
    (settings.parse_topic, "..", BAD),
    (settings.parse_topic, "a" * 250, BAD),
])
def test_parsers_at_their_edges(parser, text, expected) -> None:
    if expected == BAD:
        with pytest.raises(ValueError, match="expected"):
            parser(text)
    else:
        assert parser(text) == expected


def test_the_cache_root_comes_from_the_given_environment(monkeypatch) -> None:
    monkeypatch.delenv("COSYVOICE_TRACED_CACHE", raising=False)
    assert settings.cache_dir({"COSYVOICE_TRACED_CACHE": "/srv/cache"}) == "/srv/cache"
    assert settings.cache_dir({}).endswith("cosyvoice-otel")


@pytest.mark.parametrize(("traces", "metrics"), [
    ("http://collector:4318/v1/traces", "http://collector:4318/v1/metrics"),
    ("http://collector:4318/v1/traces/", "http://collector:4318/v1/metrics"),
    ("http://BOX:4318/X", "http://BOX:4318/X/v1/metrics"),
])
def test_the_metrics_url_sits_beside_the_traces_url(traces, metrics) -> None:
    assert settings.otlp_metrics_endpoint(traces) == metrics
