"""The settings table: one precedence rule, validation, and the rendered child environment."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosyvoice_otel.launcher.child_env import render
from cosyvoice_otel.settings import (
    OPTIONS,
    OPTIONS_BY_NAME,
    ConfigError,
    Settings,
    current,
    parse_seconds,
)

from ..support.helpers import examples


def test_defaults_render_a_zipkin_json_setup() -> None:
    env = render(Settings.resolve({}, {}), {})
    assert env["OTEL_TRACES_EXPORTER"] == "cosyvoice_zipkin"  # the resilient JSON v2 exporter
    assert env["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] == "http://localhost:9411/api/v2/spans"
    assert env["OTEL_SERVICE_NAME"] == "cosyvoice3"
    assert env["OTEL_METRICS_EXPORTER"] == "none"
    assert env["OTEL_LOGS_EXPORTER"] == "none"
    assert env["OTEL_TRACES_SAMPLER"] == "cosyvoice_ratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "1.0"
    assert set(env["OTEL_PROPAGATORS"].split(",")) >= {"tracecontext", "cosyvoice_b3"}


@pytest.mark.parametrize(
    ("name", "flag", "ours", "otel", "default"),
    [
        ("service_name", "from-flag", "from-ours", {"OTEL_SERVICE_NAME": "from-otel"},
         "cosyvoice3"),
        ("sampling_rate", "0.25", "0.5",
         {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.75"}, 1.0),
        ("zipkin_endpoint", "http://flag:9411/api/v2/spans", "http://ours:9411/api/v2/spans",
         {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://otel:9411/api/v2/spans"},
         "http://localhost:9411/api/v2/spans"),
        ("exporter", "console", "otlp", {"OTEL_TRACES_EXPORTER": "none"}, "zipkin"),
        ("service_version", "1.0", "2.0", {"OTEL_RESOURCE_ATTRIBUTES": "service.version=3.0"},
         None),
        ("propagators", "b3", "b3multi", {"OTEL_PROPAGATORS": "tracecontext"},
         "tracecontext,baggage,cosyvoice_b3"),
    ],
)
def test_one_precedence_flag_then_ours_then_otel_then_default(name, flag, ours, otel,
                                                               default) -> None:
    option = next(o for o in OPTIONS if o.name == name)
    parse = option.parse
    all_env = {option.envvar: ours, **otel}
    assert Settings.resolve({name: flag}, all_env).values[name] == parse(flag)
    assert Settings.resolve({}, all_env).values[name] == parse(ours)
    resolved_otel = Settings.resolve({}, otel)
    assert resolved_otel.sources[name] == "otel"
    assert resolved_otel.values[name] != default
    assert Settings.resolve({}, {}).values[name] == default


def test_sources_are_reported() -> None:
    s = Settings.resolve({"debug": True}, {"COSYVOICE_TRACED_SERVICE_NAME": "svc"})
    assert s.sources["debug"] == "flag"
    assert s.sources["service_name"] == "env"
    assert s.sources["exporter"] == "default"


def test_otel_sdk_disabled_is_the_kill_switch() -> None:
    assert Settings.resolve({}, {"OTEL_SDK_DISABLED": "true"}).tracing is False
    assert Settings.resolve({"tracing": True}, {"OTEL_SDK_DISABLED": "true"}).tracing is True


@pytest.mark.parametrize(
    ("flags", "env", "names"),
    [
        ({"sampling_rate": "1.5"}, {}, "--sampling-rate"),
        ({"sampling_rate": "abc"}, {}, "--sampling-rate"),
        ({"sampling_rate": "nan"}, {}, "--sampling-rate"),
        ({"zipkin_endpoint": "localhost:9411"}, {}, "--zipkin-endpoint"),
        ({"exporter": "jaeger"}, {}, "--exporter"),
        ({"propagators": "w3c"}, {}, "--propagators"),
        ({}, {"COSYVOICE_TRACED_SAMPLING_RATE": "-1"}, "COSYVOICE_TRACED_SAMPLING_RATE"),
        ({}, {"COSYVOICE_TRACED_STAGE_SPANS": "maybe"}, "COSYVOICE_TRACED_STAGE_SPANS"),
    ],
)
def test_bad_values_name_their_source(flags, env, names) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.resolve(flags, env)
    message = str(err.value)
    assert message.startswith(names)
    assert "\n" not in message


def test_timeout_is_rendered_in_the_seconds_the_python_sdk_parses() -> None:
    assert parse_seconds("2500ms") == 3
    assert parse_seconds("5s") == 5
    assert parse_seconds("300ms") == 1  # never 0: the SDK would fall back to its 10 s default
    env = render(Settings.resolve({"export_timeout": "2500ms"}, {}), {})
    assert env["OTEL_EXPORTER_ZIPKIN_TIMEOUT"] == "3"


def test_resource_attributes_are_merged_not_replaced() -> None:
    environ = {"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=web-1,service.version=old"}
    settings = Settings.resolve({"service_version": "v2", "environment": "prod"}, environ)
    env = render(settings, environ)
    attrs = dict(item.split("=", 1) for item in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attrs == {"k8s.pod.name": "web-1", "service.version": "v2",
                     "deployment.environment.name": "prod"}


def test_metrics_and_logs_exporters_stay_as_the_user_asked() -> None:
    environ = {"OTEL_METRICS_EXPORTER": "otlp"}
    env = render(Settings.resolve({}, environ), environ)
    assert env["OTEL_METRICS_EXPORTER"] == "otlp"
    assert env["OTEL_LOGS_EXPORTER"] == "none"


def test_resolved_settings_travel_to_the_child_for_the_plugin() -> None:
    env = render(Settings.resolve({"stage_spans": False}, {}), {})
    assert env["COSYVOICE_TRACED_STAGE_SPANS"] == "false"
    # and the child, reading its own environment back, resolves to the same settings
    again = Settings.resolve({}, env)
    assert again.values == Settings.resolve({"stage_spans": False}, {}).values


@pytest.mark.parametrize(("environ", "variable", "option", "default"), [
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
     "OTEL_TRACES_SAMPLER_ARG", "sampling_rate", 1.0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"},
     "OTEL_TRACES_SAMPLER_ARG", "sampling_rate", 1.0),
    ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER", "sampling_rate", 1.0),
    ({"OTEL_TRACES_EXPORTER": "bogus"}, "OTEL_TRACES_EXPORTER", "exporter", "zipkin"),
    ({"OTEL_SDK_DISABLED": "perhaps"}, "OTEL_SDK_DISABLED", "tracing", True),
    # the README's one rule: ANY unusable OTEL_* value, a bad URL included, is a warning and
    # the default (only our own flags and COSYVOICE_TRACED_* variables are errors)
    ({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "ftp://x"}, "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
     "zipkin_endpoint", "http://localhost:9411/api/v2/spans"),
    ({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "zipkin:9411"}, "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
     "zipkin_endpoint", "http://localhost:9411/api/v2/spans"),
    ({"OTEL_EXPORTER_PROMETHEUS_PORT": "http"}, "OTEL_EXPORTER_PROMETHEUS_PORT",
     "metrics_port", 9464),
])
def test_an_otel_value_we_fall_back_from_gives_one_warning_naming_it(
        environ, variable, option, default) -> None:
    settings = Settings.resolve({}, environ)
    assert settings.values[option] == default
    assert len(settings.warnings) == 1
    assert settings.warnings[0].startswith(variable) and "\n" not in settings.warnings[0]


def test_valid_otel_values_give_no_warning() -> None:
    settings = Settings.resolve({}, {"OTEL_TRACES_SAMPLER": "traceidratio",
                                     "OTEL_TRACES_SAMPLER_ARG": "0.5",
                                     "OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"})
    assert settings.warnings == ()
    assert (settings.sampling_rate, settings.exporter) == (0.5, "otlp")


def test_the_traced_process_reads_a_bad_value_as_one_warning_and_the_default(
        caplog, process_settings) -> None:
    with caplog.at_level("WARNING", logger="cosyvoice_otel"):
        settings = process_settings({"COSYVOICE_TRACED_USER_AGENT": "maybe"})
        assert settings.user_agent is True
        assert current() is settings  # resolved once: every plug-in reads the same object
    assert len(caplog.records) == 1 and "COSYVOICE_TRACED_USER_AGENT" in caplog.text
    line = caplog.records[0].getMessage()  # ours, saying so, with the whole reason
    assert line == f"cosyvoice-otel: {settings.warnings[0]}"
    assert line.endswith("; using the default true")  # the default it fell back to, by name
    assert process_settings({"COSYVOICE_TRACED_USER_AGENT": "off"}).user_agent is False


def test_the_launcher_always_selects_our_configurator() -> None:
    environ = {"OTEL_PYTHON_CONFIGURATOR": "someone_elses"}
    assert render(Settings.resolve({}, environ), environ)["OTEL_PYTHON_CONFIGURATOR"] == \
        "cosyvoice_otel"


# ------------------------------------------------------------- property: bad input, one line

_VALUE_OPTIONS = [o for o in OPTIONS_BY_NAME.values() if "/" not in o.flag]
_BOOL_OPTIONS = [o for o in OPTIONS_BY_NAME.values() if "/" in o.flag]
_NEAR_VALID = st.sampled_from(["0", "1", "0.5", "1.5", "-1", "nan", "inf", "true", "maybe", "",
                               " ", "5s", "2500ms", "0ms", "http://h:9411/x", "h:9411",
                               "http://h:99999/x", "ftp://h/x", "zipkin", "otlp", "b3,w3c",
                               "tracecontext", "off", "text=0", "text=5,audio=x", "a=b",
                               "x=m:C.f", "a,b"])


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from cosyvoice_otel.launcher.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


@settings(max_examples=examples(200), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(_VALUE_OPTIONS), value=_NEAR_VALID | st.text(max_size=25))
def test_property_every_bad_flag_value_is_one_line_and_exit_2(option, value, capsys) -> None:
    try:
        option.parse(value)
        valid = True
    except ValueError:
        valid = False
    flag = option.flag.split("/")[0]
    code, err = _run_cli(["env", f"{flag}={value}"], capsys)
    if valid:
        assert code == 0, err
    else:
        assert code == 2
        assert err.count("\n") == 1 and err.startswith("cosyvoice-traced: error: ")
        assert flag in err


@settings(max_examples=examples(150), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(_BOOL_OPTIONS + _VALUE_OPTIONS),
       value=(_NEAR_VALID | st.text(max_size=25)).filter(lambda v: "\x00" not in v))
def test_property_every_bad_variable_is_one_line_and_exit_2(option, value, capsys) -> None:
    import os

    try:
        if value.strip():  # a blank variable counts as unset
            option.parse(value)
        valid = True
    except ValueError:
        valid = False
    saved = os.environ.get(option.envvar)
    os.environ[option.envvar] = value
    try:
        code, err = _run_cli(["env"], capsys)
    finally:
        if saved is None:
            del os.environ[option.envvar]
        else:
            os.environ[option.envvar] = saved
    if valid:
        assert code == 0, err
    else:
        assert code == 2
        assert err.count("\n") == 1 and option.envvar in err


def test_debug_output_names_each_option_its_value_and_where_it_came_from() -> None:
    settings = Settings.resolve(environ={"COSYVOICE_TRACED_SAMPLING_RATE": "0.5"})
    lines = settings.describe()
    assert len(lines) == len(OPTIONS)
    assert "sampling_rate = 0.5 (env)" in lines
    assert "exporter = 'zipkin' (default)" in lines


def test_a_resource_value_may_hold_an_equals_sign_and_an_item_without_one_is_skipped() -> None:
    from cosyvoice_otel.settings import resource_attributes

    environ = {"OTEL_RESOURCE_ATTRIBUTES": "build.flags=a=b, junk ,=x,k= v "}
    assert resource_attributes(environ) == {"build.flags": "a=b", "k": "v"}
    assert resource_attributes({}) == {}
