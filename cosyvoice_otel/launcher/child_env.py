"""The environment the traced program gets: the resolved settings rendered as variables.

``cosyvoice-traced run``, ``cosyvoice-traced env`` and ``launch.sh`` all go through
``render()``, so the three can never disagree (a test compares the child environments). The
settings themselves (the option table, the precedence rule) are ``cosyvoice_otel.settings``;
the traced process reads the same table from the variables rendered here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cosyvoice_otel.settings import (
    EXPORTERS_BY_NAME,
    OPTIONS,
    Settings,
    format_value,
    otlp_metrics_endpoint,
    resource_attributes,
)

# rendered for what the child reads as a fallback (the option table); our configurator builds
# the metrics itself (sdk/meter.py) and the SDK never builds an exporter from this variable
METRICS_TO_OTEL = {"prometheus": "prometheus", "otlp": "otlp", "none": "none"}


def render(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to set in the traced program's environment (on top of ``environ``)."""
    environ = os.environ if environ is None else environ
    exporter = EXPORTERS_BY_NAME[settings.exporter]  # the exporter table (settings.py)
    env: dict[str, str] = {
        "OTEL_SERVICE_NAME": settings.service_name,
        "OTEL_TRACES_EXPORTER": exporter.otel_name,
        # parent-based trace-id ratio that lets a B3 "defer" be decided here
        "OTEL_TRACES_SAMPLER": "cosyvoice_ratio",
        "OTEL_TRACES_SAMPLER_ARG": format_value(float(settings.sampling_rate)),
        "OTEL_PROPAGATORS": settings.propagators,
        # the metrics choice (built by our configurator, sdk/meter.py)
        "OTEL_METRICS_EXPORTER": METRICS_TO_OTEL[settings.metrics],
        # the distro defaults logs to OTLP too; they stay off unless the user asked
        "OTEL_LOGS_EXPORTER": environ.get("OTEL_LOGS_EXPORTER", "none"),
        # ids independent of the app's random.seed() (see sdk/id_generator.py)
        "OTEL_PYTHON_ID_GENERATOR": environ.get("OTEL_PYTHON_ID_GENERATOR", "cosyvoice_otel"),
        # our configurator: redaction in front of every exporter, keep-errors, the process
        # lifecycle (sdk/configurator.py); never the user's choice, or text could leak
        "OTEL_PYTHON_CONFIGURATOR": "cosyvoice_otel",
        # our distro: passes the HTTP instrumentation its options (sdk/distro.py)
        "OTEL_PYTHON_DISTRO": "cosyvoice_otel",
    }
    if settings.excluded_urls != "none":
        env["OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"] = settings.excluded_urls
    if exporter.env is not None:
        env.update(exporter.env(settings))
    if settings.metrics == "otlp" and not environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = otlp_metrics_endpoint(settings.otlp_endpoint)
        env["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"] = "http/protobuf"
    resource = resource_attributes(environ)
    for key, value in (("service.version", settings.service_version),
                       ("deployment.environment.name", settings.environment)):
        if value is not None:
            resource[key] = value
    if resource:
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(f"{k}={v}" for k, v in resource.items())
    if settings.debug:
        env["OTEL_LOG_LEVEL"] = "debug"
    # The resolved settings travel too, so the in-process plug-ins read exactly what we chose.
    for option in OPTIONS:
        if option.name == "tracing":
            continue
        value = getattr(settings, option.name)
        if value is not None:
            env[option.envvar] = format_value(value)
    return env
