"""Every parser of the option table, value by value with the exact result or message (they
are what a user reads after `cosyvoice-traced: error:`), the OTEL_* fallbacks, and the
rendered environment for each exporter."""

from __future__ import annotations

import pytest

from cosyvoice_otel import settings as config
from cosyvoice_otel.launcher.child_env import render
from cosyvoice_otel.settings import ConfigError, Settings


@pytest.mark.parametrize(("parse", "text", "expected"), [
    (config.parse_bool, " YES ", True), (config.parse_bool, "on", True),
    (config.parse_bool, "1", True), (config.parse_bool, "True", True),
    (config.parse_bool, "no", False), (config.parse_bool, "OFF", False),
    (config.parse_bool, "0", False), (config.parse_bool, "false", False),
    (config.parse_rate, "0", 0.0), (config.parse_rate, "1", 1.0), (config.parse_rate, "0.25", 0.25),
    (config.parse_http_url, " https://z:9411/api/v2/spans ", "https://z:9411/api/v2/spans"),
    (config.parse_http_url, "http://z/x", "http://z/x"),
    (config.parse_exporter, " OTLP ", "otlp"), (config.parse_exporter, "zipkin-file", "zipkin-file"),
    (config.parse_propagators, "B3, tracecontext,,", "b3,tracecontext"),
    (config.parse_seconds, "600", 600), (config.parse_seconds, "2500ms", 3),
    (config.parse_seconds, "1ms", 1), (config.parse_seconds, "5S", 5), (config.parse_seconds, "0.2", 1),
    (config.parse_megabytes, "0.5", 0.5), (config.parse_megabytes, "1000000", 1_000_000.0),
    (config.parse_path, " out.json ", "out.json"),
    (config.parse_text, " tts prod ", "tts prod"),
    (config.parse_stages, "llm = a.b:C.d ; flow=a.b:E.f", "llm=a.b:C.d;flow=a.b:E.f"),
    (config.parse_input_limits, " OFF ", "off"),
    (config.parse_metrics, " Prometheus ", "prometheus"),
    (config.parse_port, " 9464 ", 9464),
    (config.parse_host, " 127.0.0.1 ", "127.0.0.1"),
    (config.parse_host, "[::1]", "::1"),
    (config.parse_host, "::", "::"),
    (config.parse_bootstrap_servers, " k1:9092 , k2:9093 ", "k1:9092,k2:9093"),
    (config.parse_topic, " zipkin.spans-1 ", "zipkin.spans-1"),
])
def test_parsers_accept(parse, text, expected) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("parse", "text", "message"), [
    (config.parse_bool, "maybe", "expected true or false, got 'maybe'"),
    (config.parse_rate, "x", "expected a number between 0 and 1, got 'x'"),
    (config.parse_rate, "-0.01", "expected a number between 0 and 1, got '-0.01'"),
    (config.parse_rate, "1.01", "expected a number between 0 and 1, got '1.01'"),
    (config.parse_rate, "nan", "expected a number between 0 and 1, got 'nan'"),
    (config.parse_http_url, "ftp://z/x", "expected an http:// or https:// URL, got 'ftp://z/x'"),
    (config.parse_http_url, "https://", "expected an http:// or https:// URL, got 'https://'"),
    (config.parse_http_url, "z:9411", "expected an http:// or https:// URL, got 'z:9411'"),
    (config.parse_http_url, "http://z:99999/x", "bad port in URL 'http://z:99999/x'"),
    # the exporter table's names, in its order (a new row needs no edit here)
    (config.parse_exporter, "jaeger",
     f"expected one of {', '.join(row.name for row in config.EXPORTER_TABLE)}, got 'jaeger'"),
    (config.parse_propagators, " , ", "expected a comma-separated list of propagators, got nothing"),
    (config.parse_propagators, "b3,w3c", "unknown propagator 'w3c'; known: tracecontext, baggage, "
                                         "cosyvoice_b3, b3, b3multi, jaeger, xray, ot_trace, none"),
    (config.parse_seconds, "soon", "expected seconds such as 5, 5s or 2500ms, got 'soon'"),
    (config.parse_seconds, "0", "expected a timeout between 1 ms and 600 s, got '0'"),
    (config.parse_seconds, "601", "expected a timeout between 1 ms and 600 s, got '601'"),
    (config.parse_seconds, "600001ms", "expected a timeout between 1 ms and 600 s, got '600001ms'"),
    (config.parse_megabytes, "big", "expected a size in MiB, got 'big'"),
    (config.parse_megabytes, "0", "expected a size in MiB above 0, got '0'"),
    (config.parse_megabytes, "1000001", "expected a size in MiB above 0, got '1000001'"),
    (config.parse_path, "  ", "must not be empty"),
    (config.parse_metrics, "statsd", "expected one of prometheus, otlp, none, got 'statsd'"),
    (config.parse_port, "http", "expected a TCP port number, got 'http'"),
    (config.parse_port, "0", "expected a TCP port between 1 and 65535, got '0'"),
    (config.parse_port, "65536", "expected a TCP port between 1 and 65535, got '65536'"),
    (config.parse_host, "a b", "expected a host name or IP address to listen on, got 'a b'"),
    (config.parse_host, "http://x", "expected a host name or IP address to listen on, got "
                                    "'http://x'"),
    (config.parse_bootstrap_servers, " , ", "expected HOST:PORT[,HOST:PORT...], got nothing"),
    (config.parse_bootstrap_servers, "k1:9092,k2", "expected HOST:PORT[,HOST:PORT...], got 'k2'"),
    (config.parse_bootstrap_servers, "k1:0", "expected HOST:PORT[,HOST:PORT...], got 'k1:0'"),
    (config.parse_topic, "a/b", "expected a Kafka topic name ([a-zA-Z0-9._-], 1 to 249), got "
                                "'a/b'"),
    (config.parse_topic, "..", "expected a Kafka topic name ([a-zA-Z0-9._-], 1 to 249), got "
                               "'..'"),
    (config.parse_text, "", "must not be empty"),
    (config.parse_text, "a,b", "must not contain ',' or '=', got 'a,b'"),
    (config.parse_text, "a=b", "must not contain ',' or '=', got 'a=b'"),
    (config.parse_stages, " ; ", "expected NAME=module:Class.method"),
])
def test_parsers_reject_with_the_exact_message(parse, text, message) -> None:
    with pytest.raises(ValueError) as err:
        parse(text)
    assert str(err.value) == message


def test_a_bad_stage_row_and_a_missing_stage_file_say_why() -> None:
    with pytest.raises(ValueError) as err:
        config.parse_stages("nonsense")
    assert "nonsense" in str(err.value)
    with pytest.raises(ValueError) as err:
        config.parse_stage_file("/no/such/stages.toml")
    assert "/no/such/stages.toml" in str(err.value)


@pytest.mark.parametrize(("environ", "rate"), [
    ({"OTEL_TRACES_SAMPLER": "always_on"}, 1.0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, 1.0),
    ({"OTEL_TRACES_SAMPLER": "always_off"}, 0.0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, 0.0),
    ({"OTEL_TRACES_SAMPLER": " TraceIdRatio ", "OTEL_TRACES_SAMPLER_ARG": "0.3"}, 0.3),
    ({"OTEL_TRACES_SAMPLER": "cosyvoice_ratio", "OTEL_TRACES_SAMPLER_ARG": "0.2"}, 0.2),
    ({"OTEL_TRACES_SAMPLER": "traceidratio"}, 1.0),  # no argument: the SDK's default
])
def test_otel_samplers_map_to_a_rate(environ, rate) -> None:
    settings = Settings.resolve({}, environ)
    assert settings.sampling_rate == rate and settings.sources["sampling_rate"] == "otel"
    assert settings.warnings == ()


def test_a_sampler_we_cannot_map_names_itself_in_the_warning() -> None:
    (warning,) = Settings.resolve({}, {"OTEL_TRACES_SAMPLER": "xray"}).warnings
    assert warning == ("OTEL_TRACES_SAMPLER='xray' is not a sampler we can map to a rate; "
                       "using the default 1.0")


@pytest.mark.parametrize(("environ", "expected"), [
    ({"OTEL_SERVICE_NAME": "from-otel"}, {"service_name": "from-otel"}),
    ({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://z:1/s"}, {"zipkin_endpoint": "http://z:1/s"}),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, {"exporter": "console"}),
    ({"OTEL_TRACES_EXPORTER": "cosyvoice_kafka"}, {"exporter": "kafka"}),
    ({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "9100",
      "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1"},
     {"metrics": "prometheus", "metrics_port": 9100, "metrics_host": "127.0.0.1"}),
    ({"OTEL_METRICS_EXPORTER": "otlp_proto_http,prometheus"}, {"metrics": "otlp"}),
    ({"OTEL_RESOURCE_ATTRIBUTES": " service.version = 2 x ,deployment.environment.name=prod,=z,"
      "bad"}, {"service_version": "2 x", "environment": "prod"}),
])
def test_otel_variables_fill_their_options(environ, expected) -> None:
    settings = Settings.resolve({}, environ)
    for name, value in expected.items():
        assert settings.values[name] == value and settings.sources[name] == "otel"
    if "OTEL_RESOURCE_ATTRIBUTES" in environ:  # only well-formed pairs travel on
        rendered = render(settings, environ)["OTEL_RESOURCE_ATTRIBUTES"]
        assert rendered == "service.version=2 x,deployment.environment.name=prod"


def test_a_bad_flag_error_names_the_flag_not_its_pair() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.resolve({"stage_spans": "maybe"}, {})
    assert str(err.value) == "--stage-spans: expected true or false, got 'maybe'"
    with pytest.raises(AttributeError, match="no_such"):
        Settings.resolve({}, {}).no_such  # noqa: B018


def test_a_metrics_fallback_warning_names_what_we_run() -> None:
    (warning,) = Settings.resolve({}, {"OTEL_METRICS_EXPORTER": "console"}).warnings
    assert warning == ("OTEL_METRICS_EXPORTER='console' is not one we can run (known: none, otlp, "
                       "otlp_proto_http, prometheus); using the default none")


@pytest.mark.parametrize(("traces", "metrics"), [
    ("http://c:4318/v1/traces", "http://c:4318/v1/metrics"),
    ("http://c:4318/v1/traces/", "http://c:4318/v1/metrics"),
    ("http://c:4318", "http://c:4318/v1/metrics")])
def test_the_otlp_metrics_url_sits_beside_the_traces_url(traces, metrics) -> None:
    assert config.otlp_metrics_endpoint(traces) == metrics


def test_a_fallback_warning_shows_the_default_it_used() -> None:
    (warning,) = Settings.resolve({}, {"OTEL_TRACES_EXPORTER": "bogus"}).warnings
    assert warning.endswith("; using the default zipkin")
    known = sorted(name for row in config.EXPORTER_TABLE for name in (row.otel_name, *row.aliases))
    assert "cosyvoice_zipkin" in known and "zipkin_json" in known
    assert f"(known: {', '.join(known)})" in warning


@pytest.mark.parametrize(("flags", "environ", "expected", "absent"), [
    ({}, {}, {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://localhost:9411/api/v2/spans",
              "OTEL_EXPORTER_ZIPKIN_TIMEOUT": "5", "OTEL_PYTHON_ID_GENERATOR": "cosyvoice_otel",
              "OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
     ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_LOG_LEVEL", "COSYVOICE_TRACED_TRACING"]),
    ({"exporter": "otlp", "export_timeout": "3"}, {},
     {"OTEL_TRACES_EXPORTER": "otlp_proto_http",
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://localhost:4318/v1/traces",
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
      "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3000"},
     ["OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_TIMEOUT"]),
    ({"exporter": "console", "debug": True}, {"OTEL_LOGS_EXPORTER": "otlp",
                                              "OTEL_PYTHON_ID_GENERATOR": "random"},
     {"OTEL_TRACES_EXPORTER": "console", "OTEL_LOG_LEVEL": "debug", "OTEL_LOGS_EXPORTER": "otlp",
      "OTEL_PYTHON_ID_GENERATOR": "random", "COSYVOICE_TRACED_DEBUG": "true"},
     ["OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]),
    ({"metrics": "prometheus", "metrics_port": "9100"}, {},
     {"OTEL_METRICS_EXPORTER": "prometheus", "COSYVOICE_TRACED_METRICS": "prometheus",
      "COSYVOICE_TRACED_METRICS_PORT": "9100", "COSYVOICE_TRACED_METRICS_HOST": "0.0.0.0"},
     ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]),
    ({"metrics": "otlp", "otlp_endpoint": "http://c:4318/v1/traces"}, {},
     {"OTEL_METRICS_EXPORTER": "otlp",
      "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics",
      "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"}, []),
    ({"metrics": "otlp"}, {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://mine:4318/m"},
     {"OTEL_METRICS_EXPORTER": "otlp"}, ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]),
    ({"exporter": "kafka", "kafka_bootstrap_servers": "k1:9092,k2:9092"}, {},
     {"OTEL_TRACES_EXPORTER": "cosyvoice_kafka",
      "COSYVOICE_TRACED_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
      "COSYVOICE_TRACED_KAFKA_TOPIC": "zipkin"},
     ["OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]),
    ({"exporter": "zipkin-file", "zipkin_file": "t.json"}, {},
     {"OTEL_TRACES_EXPORTER": "cosyvoice_zipkin_file", "COSYVOICE_TRACED_ZIPKIN_FILE": "t.json"},
     ["OTEL_EXPORTER_ZIPKIN_ENDPOINT"]),
])
def test_rendered_environment_per_exporter(flags, environ, expected, absent) -> None:
    env = render(Settings.resolve(flags, environ), environ)
    for key, value in expected.items():
        assert env[key] == value, key
    for key in absent:
        assert key not in env, key


def test_the_process_settings_read_the_process_environment(process_settings) -> None:
    assert process_settings({"COSYVOICE_TRACED_USER_AGENT": "off"}).user_agent is False
    assert process_settings({"COSYVOICE_TRACED_USER_AGENT": "  "}).user_agent is True  # blank
    assert "COSYVOICE_TRACED_USER_AGENT" not in process_settings({}).sources or \
        process_settings({}).sources["user_agent"] == "default"
    assert process_settings({}).spool_max_mb == 64.0


@pytest.mark.parametrize(("environ", "name", "expected"), [
    # the same precedence as the launcher: COSYVOICE_TRACED_* > OTEL_* > default
    ({"COSYVOICE_TRACED_ZIPKIN_ENDPOINT": "http://a:1/api/v2/spans",
      "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://b:2/api/v2/spans"}, "zipkin_endpoint",
     "http://a:1/api/v2/spans"),
    ({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://b:2/api/v2/spans"}, "zipkin_endpoint",
     "http://b:2/api/v2/spans"),
    ({}, "zipkin_endpoint", "http://localhost:9411/api/v2/spans"),
    ({"OTEL_EXPORTER_ZIPKIN_TIMEOUT": "7"}, "export_timeout", 7),
    ({"COSYVOICE_TRACED_KEEP_ERRORS": "no"}, "keep_errors", False),
    ({"COSYVOICE_TRACED_STAGE": "x=m:C.f"}, "stage", "x=m:C.f"),
])
def test_the_process_settings_follow_the_launchers_precedence(environ, name, expected,
                                                              process_settings) -> None:
    assert process_settings(environ).values[name] == expected


@pytest.mark.parametrize(("environ", "name"), [
    ({"COSYVOICE_TRACED_ZIPKIN_ENDPOINT": "ftp://x"}, "zipkin_endpoint"),
    ({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "not a url"}, "zipkin_endpoint"),
    ({"COSYVOICE_TRACED_SPOOL_MAX_MB": "-3"}, "spool_max_mb"),
    ({"COSYVOICE_TRACED_STAGE": "nonsense"}, "stage"),
    ({"COSYVOICE_TRACED_INPUT_LIMITS": "text=abc"}, "input_limits"),
])
def test_a_bad_value_in_the_traced_process_is_one_warning_and_the_default(
        environ, name, caplog, process_settings) -> None:
    from cosyvoice_otel.settings import OPTIONS_BY_NAME

    with caplog.at_level("WARNING", logger="cosyvoice_otel"):
        settings = process_settings(environ)
    assert settings.values[name] == OPTIONS_BY_NAME[name].default
    assert settings.sources[name] == "default"
    assert len(caplog.records) == 1 and next(iter(environ)) in caplog.text


@pytest.mark.parametrize(("flags", "environ", "expected", "absent"), [
    ({}, {}, {"OTEL_PYTHON_DISTRO": "cosyvoice_otel",
              "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": config.DEFAULT_EXCLUDED_URLS,
              "COSYVOICE_TRACED_HTTP_IO_SPANS": "false"}, []),
    ({"excluded_urls": "none"}, {}, {"COSYVOICE_TRACED_EXCLUDED_URLS": "none"},
     ["OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"]),
    ({}, {"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz, /metrics"},
     {"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz,/metrics"}, []),
    ({"http_io_spans": True}, {}, {"COSYVOICE_TRACED_HTTP_IO_SPANS": "true"}, []),
])
def test_http_noise_options_render(flags, environ, expected, absent) -> None:
    env = render(Settings.resolve(flags, environ), environ)
    for key, value in expected.items():
        assert env[key] == value, key
    for key in absent:
        assert key not in env, key


@pytest.mark.parametrize(("text", "ok"), [("none", "none"), ("NONE", "none"),
                                          ("a, b ,c", "a,b,c"), ("(", None), (" , ", None)])
def test_parse_excluded_urls(text, ok) -> None:
    if ok is None:
        with pytest.raises(ValueError):
            config.parse_excluded_urls(text)
    else:
        assert config.parse_excluded_urls(text) == ok


@pytest.mark.parametrize("url", ["http://h/gradio_api/heartbeat/abc", "http://h/heartbeat/x",
                                 "http://h/assets/index.js", "http://h/static/x.css",
                                 "http://h/config", "http://h/gradio_api/info",
                                 "http://h/info?serialize=False", "http://h/favicon.ico",
                                 "http://h/gradio_api/startup-events"])
def test_default_exclusions_cover_gradio_housekeeping(url) -> None:
    from opentelemetry.util.http import parse_excluded_urls

    assert parse_excluded_urls(config.DEFAULT_EXCLUDED_URLS).url_disabled(url)


@pytest.mark.parametrize("url", ["http://h/gradio_api/queue/join", "http://h/gradio_api/call/x",
                                 "http://h/inference_sft?tts_text=a", "http://h/",
                                 "http://h/gradio_api/queue/data?session_hash=1",
                                 "http://h/gradio_api/upload", "http://h/inference_instruct2"])
def test_default_exclusions_keep_synthesis_routes(url) -> None:
    from opentelemetry.util.http import parse_excluded_urls

    assert not parse_excluded_urls(config.DEFAULT_EXCLUDED_URLS).url_disabled(url)
