"""The settings table: every option of cosyvoice-otel, its one precedence rule, resolved ONCE.

The ground floor of the package: the launcher (flags, ``env``, the child's environment), the SDK
plug-ins (configurator, sampler, exporters, distro) and the instrumentor all read their options
here, so a setting can mean only one thing. Every option is a row of ``OPTIONS``: its flag, its
``COSYVOICE_TRACED_<NAME>`` variable, the ``OTEL_*`` variable that may already carry it, a
parser and a default. One precedence rule applies to all of them::

    command-line flag  >  COSYVOICE_TRACED_<NAME>  >  OTEL_* already in the environment  >  default

Bad values: a flag or a ``COSYVOICE_TRACED_*`` variable is the user's explicit choice, so a bad
one is a ``ConfigError`` naming it (the launcher exits 2). An ``OTEL_*`` value we cannot use is
one warning naming it and the default, as the OpenTelemetry specification asks. Inside the
traced process (``current()``: resolved once per process, warnings logged once) every bad value
is a warning and the default: the app must never fail because of tracing.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cosyvoice_otel.urls import shown

# Kept light on purpose (no urllib, re or tomllib at import): this module is on the launcher's
# startup path, which BENCHMARKS.md holds to +10% over bare opentelemetry-instrument.

ENV_PREFIX = "COSYVOICE_TRACED_"

# --------------------------------------------------------------------------- the exporter table

class Exporter(NamedTuple):
    """One ``--exporter`` value. Adding an exporter is one row here and its class
    (CONTRIBUTING.md): the option's choices and help, what ``OTEL_TRACES_EXPORTER`` says, the
    child's variables, the configurator's construction and the launcher's checks read it."""

    name: str
    otel_name: str  # OTEL_TRACES_EXPORTER in the traced process (rendered by the launcher)
    help: str  # a few words for --help
    # "module:Class" that our configurator builds as Class(**args(settings)); "" for the SDK's
    # own exporter, which the SDK builds by ``otel_name`` from the variables ``env`` renders
    target: str = ""
    args: Callable[[Settings], dict[str, Any]] | None = None
    env: Callable[[Settings], dict[str, str]] | None = None
    aliases: tuple[str, ...] = ()  # other OTEL_TRACES_EXPORTER values read as this exporter
    needs: str = ""  # a module it imports that may be missing: ``run`` refuses without it
    extra: str = ""  # the pip extra that installs ``needs``
    probe: Callable[[Settings], str] | None = None  # a URL ``run`` checks in the background


def _spool(s: Settings) -> dict[str, Any]:
    return {"spool_dir": s.spool_root, "spool_max_bytes": s.spool_max_bytes}


EXPORTER_TABLE: tuple[Exporter, ...] = (
    Exporter("zipkin", "cosyvoice_zipkin", "JSON v2",
             "cosyvoice_otel.sdk.zipkin_http:ResilientZipkinExporter",
             # pipelined: encode the next batch while Zipkin takes this one
             args=lambda s: {"endpoint": s.zipkin_endpoint, "timeout": float(s.export_timeout),
                             "pipelined": True, **_spool(s)},
             env=lambda s: {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": s.zipkin_endpoint,
                            "OTEL_EXPORTER_ZIPKIN_TIMEOUT": str(s.export_timeout)},
             # "zipkin" (protobuf) is read as the JSON exporter: the protobuf one is not
             # installed (it pins an old protobuf) and Zipkin reads both
             aliases=("zipkin_json", "zipkin"), probe=lambda s: s.zipkin_endpoint),
    Exporter("otlp", "otlp_proto_http", "OTLP/HTTP",
             env=lambda s: {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": s.otlp_endpoint,
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": str(s.export_timeout * 1000)},
             aliases=("otlp",)),
    Exporter("console", "console", "span JSON on stdout"),
    Exporter("none", "none", "spans are made and measured, not sent"),
    Exporter("zipkin-file", "cosyvoice_zipkin_file",
             "Zipkin JSON in a file, for Zipkin's 'Upload JSON'",
             "cosyvoice_otel.sdk.file_exporter:ZipkinFileExporter",
             args=lambda s: {"path": s.zipkin_file}),
    Exporter("kafka", "cosyvoice_kafka",
             "Zipkin JSON v2 lists on a topic Zipkin's Kafka collector reads",
             "cosyvoice_otel.sdk.kafka_exporter:KafkaZipkinExporter",
             args=lambda s: {"bootstrap_servers": s.kafka_bootstrap_servers,
                             "topic": s.kafka_topic, **_spool(s)},
             needs="confluent_kafka", extra="kafka"),
)
EXPORTERS_BY_NAME = {row.name: row for row in EXPORTER_TABLE}
EXPORTERS = tuple(EXPORTERS_BY_NAME)
# What OTEL_TRACES_EXPORTER says -> our exporter name
OTEL_EXPORTER_NAMES = {name: row.name for row in EXPORTER_TABLE
                       for name in (row.otel_name, *row.aliases)}

# W3C first (the OTel default), then our strict B3: it reads the single `b3` header as well as
# the X-B3-* set (so all three formats a client may send are accepted), ignores malformed ids,
# and treats a missing sampled flag as "defer" (sdk/propagation.py).
DEFAULT_PROPAGATORS = "tracecontext,baggage,cosyvoice_b3"
KNOWN_PROPAGATORS = ("tracecontext", "baggage", "cosyvoice_b3", "b3", "b3multi", "jaeger", "xray",
                     "ot_trace", "none")

DEFAULT_ZIPKIN_ENDPOINT = "http://localhost:9411/api/v2/spans"

METRICS = ("prometheus", "otlp", "none")
# What OTEL_METRICS_EXPORTER says -> our metrics choice (the first name counts)
OTEL_METRICS_NAMES = {"prometheus": "prometheus", "otlp": "otlp", "otlp_proto_http": "otlp",
                      "none": "none"}


class ConfigError(ValueError):
    """A user mistake in a flag or variable; the message is one line naming it."""


class OtelFallback(ValueError):
    """An ``OTEL_*`` value we cannot use: the option falls back to its default, with one
    warning naming the variable (the OTel spec's rule for invalid environment values)."""


# ---------------------------------------------------------------- value parsers (raise ValueError)

def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_rate(text: str) -> float:
    try:
        rate = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= rate <= 1.0:  # also rejects nan
        raise ValueError(f"expected a number between 0 and 1, got {text!r}")
    return rate


def parse_http_url(text: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"bad port in URL {text!r}") from None
    return text.strip()


def parse_exporter(text: str) -> str:
    value = text.strip().lower()
    if value not in EXPORTERS:
        raise ValueError(f"expected one of {', '.join(EXPORTERS)}, got {text!r}")
    return value


def parse_bootstrap_servers(text: str) -> str:
    """``HOST:PORT[,HOST:PORT...]``, as Kafka clients read ``bootstrap.servers``."""
    servers = [item.strip() for item in text.split(",") if item.strip()]
    if not servers:
        raise ValueError("expected HOST:PORT[,HOST:PORT...], got nothing")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT[,HOST:PORT...], got {server!r}")
    return ",".join(servers)


def parse_topic(text: str) -> str:
    """A Kafka topic name: 1-249 of [a-zA-Z0-9._-], not '.' or '..'."""
    import re

    value = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value) or value in (".", ".."):
        raise ValueError(f"expected a Kafka topic name ([a-zA-Z0-9._-], 1 to 249), got {text!r}")
    return value


def parse_metrics(text: str) -> str:
    value = text.strip().lower()
    if value not in METRICS:
        raise ValueError(f"expected one of {', '.join(METRICS)}, got {text!r}")
    return value


def parse_port(text: str) -> int:
    try:
        port = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a TCP port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a TCP port between 1 and 65535, got {text!r}")
    return port


def parse_host(text: str) -> str:
    """A host name or address to listen on; an IPv6 one with or without brackets."""
    value = text.strip()
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if not bare or any(c.isspace() or c in "/@[]" for c in bare):
        raise ValueError(f"expected a host name or IP address to listen on, got {text!r}")
    return bare


def parse_propagators(text: str) -> str:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("expected a comma-separated list of propagators, got nothing")
    unknown = [n for n in names if n not in KNOWN_PROPAGATORS]
    if unknown:
        raise ValueError(
            f"unknown propagator {unknown[0]!r}; known: {', '.join(KNOWN_PROPAGATORS)}")
    return ",".join(names)


def parse_seconds(text: str) -> int:
    """Whole seconds, because that is what the Python Zipkin exporter parses (not the spec's ms)."""
    value = text.strip().lower()
    scale = 1.0
    if value.endswith("ms"):
        value, scale = value[:-2], 0.001
    elif value.endswith("s"):
        value = value[:-1]
    try:
        seconds = float(value) * scale
    except ValueError:
        raise ValueError(f"expected seconds such as 5, 5s or 2500ms, got {text!r}") from None
    if not 0 < seconds <= 600:
        raise ValueError(f"expected a timeout between 1 ms and 600 s, got {text!r}")
    return max(1, math.ceil(seconds))  # round up: never shorter than asked


def parse_stages(text: str) -> str:
    """``NAME=module:Class.method`` rows separated by ';' (checked now, applied in the app)."""
    from cosyvoice_otel.stage_rows import StageMapError, parse_stage_specs

    try:
        rows = parse_stage_specs(text)
    except StageMapError as exc:
        raise ValueError(str(exc)) from None
    if not rows:
        raise ValueError("expected NAME=module:Class.method")
    return ";".join(f"{row.span}={row.target}" for row in rows)


def parse_stage_file(text: str) -> str:
    from cosyvoice_otel.stage_rows import StageMapError, stage_source

    path = os.path.abspath(os.path.expanduser(text.strip()))
    try:
        stage_source(path)  # read and checked once: the instrumentor gets the same object
    except StageMapError as exc:
        raise ValueError(str(exc)) from None
    return path


def parse_megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a size in MiB, got {text!r}") from None
    if not 0 < value <= 1_000_000:
        raise ValueError(f"expected a size in MiB above 0, got {text!r}")
    return value


def parse_path(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return os.path.expanduser(text.strip())  # relative paths are the app's cwd's


def parse_millis(text: str) -> float:
    """Milliseconds, 0 to 60000 (a minute of start buffer or stall threshold is already
    absurd); NaN and inf refused."""
    try:
        value = float(text.strip().lower().removesuffix("ms"))
    except ValueError:
        raise ValueError(f"expected milliseconds such as 100 or 250ms, got {text!r}") from None
    if not 0.0 <= value <= 60_000.0:  # also rejects nan
        raise ValueError(f"expected milliseconds between 0 and 60000, got {text!r}")
    return value


def parse_key_setting(text: str) -> str:
    """``auto``, ``off``, or the path of a key file."""
    value = text.strip()
    if value.lower() in ("auto", "off"):
        return value.lower()
    return parse_path(value)


GPU_TIMINGS = ("auto", "events", "off")


def parse_gpu_timing(text: str) -> str:
    value = text.strip().lower()
    if value not in GPU_TIMINGS:
        raise ValueError(f"expected one of {', '.join(GPU_TIMINGS)}, got {text!r}")
    return value


def parse_input_limits(text: str) -> str:
    from cosyvoice_otel.limits import parse_input_limits as parse

    parse(text)  # raises ValueError naming the problem
    return text.strip().lower()


# Routes no one wants a trace of (Gradio's long-lived heartbeat SSE, static assets, the UI's
# config and info fetches): comma-separated regexes searched in the URL, the FastAPI
# instrumentation's own OTEL_PYTHON_FASTAPI_EXCLUDED_URLS format.
DEFAULT_EXCLUDED_URLS = ",".join((
    r"/heartbeat/", r"/(assets|static|svelte)/", r"/favicon\.ico", r"/manifest\.json",
    r"/theme\.css", r"/(gradio_api/)?info(\?|$)", r"/(gradio_api/)?config(\?|$)",
    r"/gradio_api/startup-events", r"/gradio_api/upload_progress"))


def parse_excluded_urls(text: str) -> str:
    """Comma-separated regexes, or ``none`` (trace every route)."""
    value = text.strip()
    if value.lower() == "none":
        return "none"
    patterns = [p.strip() for p in value.split(",") if p.strip()]
    if not patterns:
        raise ValueError("expected comma-separated regexes, or none")
    import re

    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regex {pattern!r}: {exc}") from None
    return ",".join(patterns)


def parse_text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    if "," in value or "=" in value:
        raise ValueError(f"must not contain ',' or '=', got {text!r}")
    return value


# ------------------------------------------------------------- reading what OTEL_* already says

def resource_attributes(environ: Mapping[str, str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attrs[key.strip()] = value.strip()
    return attrs


def _otel_exporter(environ: Mapping[str, str]) -> str | None:
    first = environ.get("OTEL_TRACES_EXPORTER", "").split(",")[0].strip().lower()
    if first and first not in OTEL_EXPORTER_NAMES:
        raise OtelFallback(f"OTEL_TRACES_EXPORTER={first!r} is not one we can run "
                           f"(known: {', '.join(sorted(OTEL_EXPORTER_NAMES))})")
    return OTEL_EXPORTER_NAMES.get(first)


def _otel_metrics(environ: Mapping[str, str]) -> str | None:
    first = environ.get("OTEL_METRICS_EXPORTER", "").split(",")[0].strip().lower()
    if first and first not in OTEL_METRICS_NAMES:
        raise OtelFallback(f"OTEL_METRICS_EXPORTER={first!r} is not one we can run "
                           f"(known: {', '.join(sorted(OTEL_METRICS_NAMES))})")
    return OTEL_METRICS_NAMES.get(first)


def _otel_sampling_rate(environ: Mapping[str, str]) -> float | None:
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler in ("always_on", "parentbased_always_on"):
        return 1.0
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in ("traceidratio", "parentbased_traceidratio", "cosyvoice_ratio"):
        try:
            return parse_rate(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError as exc:
            raise OtelFallback(f"OTEL_TRACES_SAMPLER_ARG: {exc}") from None
    if sampler:
        raise OtelFallback(f"OTEL_TRACES_SAMPLER={sampler!r} is not a sampler we can map to "
                           "a rate")
    return None


def _otel_var(name: str) -> Callable[[Mapping[str, str]], str | None]:
    return lambda environ: environ.get(name) or None


def _otel_resource(key: str) -> Callable[[Mapping[str, str]], str | None]:
    return lambda environ: resource_attributes(environ).get(key) or None


def _otel_tracing(environ: Mapping[str, str]) -> bool | None:
    if "OTEL_SDK_DISABLED" not in environ:
        return None
    try:
        return not parse_bool(environ["OTEL_SDK_DISABLED"])
    except ValueError as exc:
        raise OtelFallback(f"OTEL_SDK_DISABLED: {exc}") from None


# --------------------------------------------------------------------------- the option table

class Option(NamedTuple):
    """One setting: where it may come from and how its text is checked."""

    name: str
    flag: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    from_otel: Callable[[Mapping[str, str]], Any] | None = None
    otel_name: str = ""  # shown in docs: the OTEL_* variable read as the fallback
    multiple: bool = False  # a repeatable flag; its values are joined with ';'

    @property
    def envvar(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("tracing", "--enable-tracing/--disable-tracing", True, parse_bool,
           "Kill switch: --disable-tracing runs the program untouched (zero overhead).",
           _otel_tracing, "OTEL_SDK_DISABLED (inverted)"),
    Option("zipkin_endpoint", "--zipkin-endpoint", DEFAULT_ZIPKIN_ENDPOINT, parse_http_url,
           "Zipkin's span intake, http(s)://HOST:9411/api/v2/spans.",
           _otel_var("OTEL_EXPORTER_ZIPKIN_ENDPOINT"), "OTEL_EXPORTER_ZIPKIN_ENDPOINT"),
    Option("exporter", "--exporter", "zipkin", parse_exporter,
           "Where spans go: " + ", ".join(f"{row.name} ({row.help})" for row in EXPORTER_TABLE)
           + ".",
           _otel_exporter, "OTEL_TRACES_EXPORTER"),
    Option("otlp_endpoint", "--otlp-endpoint", "http://localhost:4318/v1/traces", parse_http_url,
           "OTLP/HTTP traces URL for --exporter otlp (a Collector, Jaeger, Tempo, ...).",
           _otel_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    Option("kafka_bootstrap_servers", "--kafka-bootstrap-servers", "localhost:9092",
           parse_bootstrap_servers,
           "Kafka brokers for --exporter kafka (HOST:PORT[,HOST:PORT]); Zipkin's Kafka collector "
           "reads the topic."),
    Option("kafka_topic", "--kafka-topic", "zipkin", parse_topic,
           "Topic for --exporter kafka (Zipkin's collector reads 'zipkin' by default)."),
    Option("zipkin_file", "--zipkin-file", "cosyvoice-traces.json", parse_path,
           "The file the zipkin-file exporter writes (one JSON array)."),
    Option("spool_dir", "--spool-dir", None, parse_path,
           "Where batches wait on disk while Zipkin is away (default: the user cache)."),
    Option("spool_max_mb", "--spool-max-mb", 64.0, parse_megabytes,
           "Cap of the spool; beyond it batches are dropped and counted."),
    Option("service_name", "--service-name", "cosyvoice3", parse_text,
           "The service name shown in Zipkin.",
           _otel_var("OTEL_SERVICE_NAME"), "OTEL_SERVICE_NAME"),
    Option("service_version", "--service-version", None, parse_text,
           "Resource attribute service.version (compare model versions).",
           _otel_resource("service.version"), "OTEL_RESOURCE_ATTRIBUTES service.version"),
    Option("environment", "--environment", None, parse_text,
           "Resource attribute deployment.environment.name (prod, staging, ...).",
           _otel_resource("deployment.environment.name"),
           "OTEL_RESOURCE_ATTRIBUTES deployment.environment.name"),
    Option("sampling_rate", "--sampling-rate", 1.0, parse_rate,
           "Share of new traces kept, 0..1; an incoming sampled decision is honoured.",
           _otel_sampling_rate, "OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG"),
    Option("keep_errors", "--keep-errors/--no-keep-errors", True, parse_bool,
           "Export every trace with a failed span, even when the sampling ratio dropped it."),
    Option("propagators", "--propagators", DEFAULT_PROPAGATORS, parse_propagators,
           "Context formats read from requests (W3C, B3 single and multi by default).",
           _otel_var("OTEL_PROPAGATORS"), "OTEL_PROPAGATORS"),
    Option("export_timeout", "--export-timeout", 5, parse_seconds,
           "Exporter HTTP timeout (5, 5s, 2500ms); rounded up to the whole seconds the SDK reads.",
           _otel_var("OTEL_EXPORTER_ZIPKIN_TIMEOUT"), "OTEL_EXPORTER_ZIPKIN_TIMEOUT"),
    # Off by default: /metrics is a listening port (a deployment decision, and a clash with a
    # second worker of the same app), and OTLP needs an endpoint; tracing alone opens nothing.
    Option("metrics", "--metrics", "none", parse_metrics,
           "Metrics from every request (sampled or not), with exemplars linking to traces: "
           "prometheus (/metrics on --metrics-port), otlp (to the OTLP endpoint), none.",
           _otel_metrics, "OTEL_METRICS_EXPORTER"),
    Option("metrics_port", "--metrics-port", 9464, parse_port,
           "Port of /metrics for --metrics prometheus (a busy port is one warning; tracing "
           "goes on).",
           _otel_var("OTEL_EXPORTER_PROMETHEUS_PORT"), "OTEL_EXPORTER_PROMETHEUS_PORT"),
    Option("metrics_host", "--metrics-host", "0.0.0.0", parse_host,
           "Address /metrics listens on (all interfaces by default, for a Prometheus on "
           "another host or outside the container).",
           _otel_var("OTEL_EXPORTER_PROMETHEUS_HOST"), "OTEL_EXPORTER_PROMETHEUS_HOST"),
    Option("stage_spans", "--stage-spans/--no-stage-spans", True, parse_bool,
           "Add CosyVoice pipeline stage spans (frontend, LLM, flow, vocoder)."),
    Option("stage", "--stage", None, parse_stages,
           "Extra stage span NAME=module:Class.method (repeatable; env: ';'-separated).",
           multiple=True),
    Option("stage_map", "--stage-map", None, parse_stage_file,
           "TOML file of extra stage rows ([[stage]] target, span, extractor, attributes)."),
    Option("gradio_bridge", "--gradio-bridge/--no-gradio-bridge", True, parse_bool,
           "Give each queued Gradio event the trace of the request that queued it."),
    Option("http_io_spans", "--http-io-spans/--no-http-io-spans", False, parse_bool,
           "The ASGI instrumentation's per-message 'http send' / 'http receive' spans (one per "
           "streamed audio chunk): off by default, they cost more than they tell."),
    Option("excluded_urls", "--excluded-urls", DEFAULT_EXCLUDED_URLS, parse_excluded_urls,
           "Routes not traced: comma-separated regexes, or none. Default: Gradio's heartbeat, "
           "static assets, /config, /info.",
           _otel_var("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"), "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"),
    Option("cuda_sync", "--cuda-sync/--no-cuda-sync", False, parse_bool,
           "End each stage span after torch.cuda.synchronize() (GPU-honest; slower)."),
    Option("gpu_timing", "--gpu-timing", "auto", parse_gpu_timing,
           "GPU time per stage without serialising the GPU: events (CUDA events resolved off "
           "the request path into cosyvoice.gpu.ms), off, or auto (events when CUDA is in use)."),
    Option("input_limits", "--input-limits", "on", parse_input_limits,
           "Mark requests over the seed's limits (text 200 chars, prompt audio 15 s): on, off, "
           "or text=N,audio=S."),
    Option("hash_content", "--hash-content/--no-hash-content", False, parse_bool,
           "Add a salted hash of each text (salt: COSYVOICE_TRACED_HASH_SALT, else random per "
           "process) to correlate repeated inputs without revealing them."),
    Option("fingerprint_key", "--fingerprint-key", "auto", parse_key_setting,
           "Secret of the input fingerprint (cosyvoice.input.fingerprint, a keyed HMAC of the "
           "input for report --same-input): a key FILE (yours, mode 0600; made once when "
           "absent), auto (fingerprint.key in the cache root), or off. "
           "COSYVOICE_TRACED_FINGERPRINT_SECRET wins over the file."),
    Option("playback_buffer_ms", "--playback-buffer-ms", 0.0, parse_millis,
           "Playback figures of a request heard chunk by chunk assume a listener who starts "
           "playing this long after the first chunk (0: at once)."),
    Option("stall_threshold_ms", "--stall-threshold-ms", 100.0, parse_millis,
           "A playback gap longer than this is a stall (tts.playback.stalls, continuous)."),
    Option("user_agent", "--user-agent/--no-user-agent", True, parse_bool,
           "Keep the client's User-Agent (http.user_agent, a standard attribute); "
           "--no-user-agent masks it like other redacted values."),
    Option("trace_response", "--trace-response/--no-trace-response", True, parse_bool,
           "Give the caller its trace id: a traceresponse header (W3C Trace Context level 2) "
           "on every traced HTTP response, the same in a gRPC call's trailing metadata."),
    Option("debug", "--debug/--no-debug", False, parse_bool,
           "Print the resolved configuration and turn on OTel debug logging."),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


def _resolve_one(option: Option, flags: Mapping[str, Any], environ: Mapping[str, str],
                 warnings: list[str]) -> tuple[Any, str]:
    """One option's value and its source (flag, env, otel, default)."""
    if flags.get(option.name) is not None:
        value = flags[option.name]
        if isinstance(value, str):
            try:
                value = option.parse(value)
            except ValueError as exc:
                raise ConfigError(f"{option.flag.split('/')[0]}: {exc}") from None
        return value, "flag"
    raw = environ.get(option.envvar)
    if raw is not None and raw.strip() != "":
        try:
            return option.parse(raw), "env"
        except ValueError as exc:
            raise ConfigError(f"{option.envvar}: {exc}") from None
    try:
        from_otel = option.from_otel(environ) if option.from_otel else None
        if isinstance(from_otel, str):
            try:
                from_otel = option.parse(from_otel)
            except ValueError as exc:
                raise OtelFallback(f"{option.otel_name}: {exc}") from None
    except OtelFallback as exc:
        warnings.append(f"{exc}; using the default {format_value(option.default)}")
        from_otel = None
    if from_otel is not None:
        return from_otel, "otel"
    return option.default, "default"


@dataclass(frozen=True)
class Settings:
    """The resolved configuration: one typed field per row of ``OPTIONS`` (a test keeps them
    equal), where each came from (flag, env, otel, default), and the warnings of resolving."""

    tracing: bool
    zipkin_endpoint: str
    exporter: str
    otlp_endpoint: str
    kafka_bootstrap_servers: str
    kafka_topic: str
    zipkin_file: str
    spool_dir: str | None
    spool_max_mb: float
    service_name: str
    service_version: str | None
    environment: str | None
    sampling_rate: float
    keep_errors: bool
    propagators: str
    export_timeout: int
    metrics: str
    metrics_port: int
    metrics_host: str
    stage_spans: bool
    stage: str | None
    stage_map: str | None
    gradio_bridge: bool
    http_io_spans: bool
    excluded_urls: str
    cuda_sync: bool
    gpu_timing: str
    input_limits: str
    hash_content: bool
    fingerprint_key: str
    playback_buffer_ms: float
    stall_threshold_ms: float
    user_agent: bool
    trace_response: bool
    debug: bool
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def resolve(cls, flags: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None, lenient: bool = False) -> Settings:
        """Apply the one precedence rule. ``flags`` holds only options given on the command
        line. ``lenient`` (the traced process): a bad value is a warning and the default,
        never a ``ConfigError``: the app must not fail because of tracing."""
        flags = flags or {}
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        warnings: list[str] = []
        for option in OPTIONS:
            try:
                values[option.name], sources[option.name] = _resolve_one(
                    option, flags, environ, warnings)
            except ConfigError as exc:
                if not lenient:
                    raise
                warnings.append(f"{exc}; using the default {format_value(option.default)}")
                values[option.name], sources[option.name] = option.default, "default"
        return cls(**values, sources=sources, warnings=tuple(warnings))

    @property
    def values(self) -> dict[str, Any]:
        """Every option's value by name (the rows of ``OPTIONS``, in order)."""
        return {option.name: getattr(self, option.name) for option in OPTIONS}

    @property
    def spool_root(self) -> str:
        """Where the spool lives: --spool-dir, else ``spool`` under the cache root."""
        return self.spool_dir or os.path.join(cache_dir(), "spool")

    @property
    def spool_max_bytes(self) -> int:
        return int(self.spool_max_mb * 1024 * 1024)

    @property
    def otlp_metrics_endpoint(self) -> str:
        """Where ``--metrics otlp`` sends: ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` when set,
        else ``/v1/metrics`` beside the traces URL (same receiver)."""
        return (os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                or otlp_metrics_endpoint(self.otlp_endpoint))

    def describe(self) -> list[str]:
        """Human-readable lines 'name = value (source)' for --debug output."""
        return [f"{o.name} = {shown(getattr(self, o.name))!r} "
                f"({self.sources.get(o.name, '?')})" for o in OPTIONS]


def otlp_metrics_endpoint(traces_endpoint: str) -> str:
    """The metrics URL beside the OTLP traces URL (same receiver, ``/v1/metrics``)."""
    base = traces_endpoint.rstrip("/")
    if base.endswith("/v1/traces"):
        base = base[: -len("/v1/traces")]
    return base + "/v1/metrics"


def cache_dir(environ: Mapping[str, str] | None = None) -> str:
    """The one cache root (Zipkin jar, demo model, collector, the default spool):
    ``COSYVOICE_TRACED_CACHE``, else ``~/.cache/cosyvoice-otel``."""
    environ = os.environ if environ is None else environ
    return environ.get("COSYVOICE_TRACED_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "cosyvoice-otel")


_current: Settings | None = None
_current_lock = threading.Lock()


def current() -> Settings:
    """The settings of THIS process, resolved once from its environment (the launcher rendered
    its flags as ``COSYVOICE_TRACED_*``; without the launcher, the ``OTEL_*`` fallbacks and the
    defaults apply). Every plug-in reads this one object; a bad value is ONE warning and that
    option's default, however many plug-ins read it."""
    global _current
    if _current is None:
        with _current_lock:
            if _current is None:
                settings = Settings.resolve(lenient=True)
                log = logging.getLogger("cosyvoice_otel")
                for line in settings.warnings:
                    log.warning("cosyvoice-otel: %s", line)
                _current = settings
    return _current


def forget_current() -> None:
    """Resolve again at the next ``current()`` (tests that change the environment)."""
    global _current
    with _current_lock:
        _current = None


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(value))
    return str(value)

