"""The ``cosyvoice-traced`` command line: parse, validate, delegate.

    cosyvoice-traced run [OPTIONS] [--] PROGRAM [ARGS...]   run PROGRAM traced (exec, drop-in)
    cosyvoice-traced env [OPTIONS] [--format shell|dotenv]  print the environment `run` would set

Options come from :data:`cosyvoice_otel.settings.OPTIONS`; each is also read from
``COSYVOICE_TRACED_<NAME>``, and ``OTEL_*`` variables already set are honoured. Precedence:
flag > COSYVOICE_TRACED_* > OTEL_* > default. User mistakes print ONE line on stderr and exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cosyvoice_otel import settings as table
from cosyvoice_otel.launcher import child_env, launcher
from cosyvoice_otel.version import __version__

EXIT_USAGE = 2


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach one click option per row of the option table (values parsed later by config)."""
    for option in reversed(table.OPTIONS):
        help_text = f"{option.help} [env: {option.envvar}]"
        if "/" in option.flag:
            func = click.option(option.flag, option.name, default=None, help=help_text)(func)
        elif option.multiple:
            func = click.option(option.flag, option.name, multiple=True, metavar="VALUE",
                                help=help_text)(func)
        else:
            func = click.option(option.flag, option.name, default=None, metavar="VALUE",
                                help=help_text)(func)
    return func


def _resolve(ctx: click.Context, params: dict[str, Any]) -> table.Settings:
    given = {name: ";".join(value) if isinstance(value, tuple) else value
             for name, value in params.items()
             if name in table.OPTIONS_BY_NAME and value not in (None, ())
             and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    try:
        settings = table.Settings.resolve(given)
    except table.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    for warning in settings.warnings:
        click.echo(f"cosyvoice-traced: warning: {warning}", err=True)
    return settings


def _check_fingerprint_key(settings: table.Settings) -> None:
    """The fingerprint's key is usable (made once here when absent, so the app finds it): a
    bad one is one line and exit 2, before the app starts."""
    if not settings.tracing:
        return
    from cosyvoice_otel import secret_key

    try:
        secret_key.load(settings.fingerprint_key)
    except secret_key.KeyFileError as exc:
        raise click.UsageError(f"--fingerprint-key: {exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cosyvoice-traced")
def cli() -> None:
    """Trace a CosyVoice service into Zipkin without touching its code."""


@cli.command(context_settings={"allow_interspersed_args": False})
@_settings_options
@click.option("-m", "module", metavar="MODULE", default=None,
              help="Run a library module as a script, like python -m MODULE.")
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, module: str | None, program: tuple[str, ...], **params: Any) -> None:
    """Run PROGRAM under opentelemetry-instrument, replacing this process.

    PROGRAM is `python app.py ...`, `app.py ...`, `-m package.module ...` or any executable
    on PATH (`uvicorn app:app`). Its pid, signals, stdio and exit status are its own.
    """
    settings = _resolve(ctx, params)
    _check_fingerprint_key(settings)
    argv = ["-m", module, *program] if module else list(program)
    try:
        resolved = launcher.resolve_program(argv)
    except launcher.LaunchError as exc:
        raise click.UsageError(str(exc)) from None
    if not settings.tracing:
        launcher.exec_untouched(resolved)
    warning = launcher.uvicorn_warning(resolved)
    if warning:
        click.echo(warning, err=True)
    if settings.debug:
        for line in settings.describe():
            click.echo(f"cosyvoice-traced: {line}", err=True)
    try:
        instrument = launcher.find_instrument()
    except launcher.LaunchError as exc:
        raise click.UsageError(str(exc)) from None
    exporter = table.EXPORTERS_BY_NAME[settings.exporter]  # the exporter table (settings.py)
    if exporter.probe is not None:
        launcher.check_endpoint_in_background(exporter.probe(settings))
    if exporter.needs:
        import importlib.util

        if importlib.util.find_spec(exporter.needs) is None:
            raise click.UsageError(f"--exporter {exporter.name} needs {exporter.needs}: "
                                   f"pip install 'cosyvoice-otel[{exporter.extra}]'")
    launcher.exec_traced(instrument, resolved, child_env.render(settings))


@cli.command("env", context_settings={"allow_interspersed_args": False})
@_settings_options
@click.option("--format", "fmt", type=click.Choice(["shell", "dotenv"]), default="shell",
              show_default=True, help="shell: `export K=V` lines; dotenv: `K=V` lines.")
@click.option("--check-endpoint", is_flag=True,
              help="Also warn on stderr (in the background) if the endpoint does not answer.")
@click.argument("program", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def env_command(ctx: click.Context, fmt: str, check_endpoint: bool, program: tuple[str, ...],
                **params: Any) -> None:
    """Print the environment `run` would give the program (for CI, containers, .env files).

    With `-- PROGRAM ARGS...` (shell format; what launch.sh uses), also the command `run` would
    exec: a `set -- ...` line with the resolved program and `instrument=...`, so a shell
    launcher resolves nothing itself."""
    import shlex

    settings = _resolve(ctx, params)
    resolved: list[str] = []
    if program:
        try:
            resolved = launcher.resolve_program(list(program))
            instrument = launcher.find_instrument() if settings.tracing else ""
        except launcher.LaunchError as exc:
            raise click.UsageError(str(exc)) from None
    if not settings.tracing:
        click.echo("# tracing disabled: the program runs untouched, nothing to set")
    else:
        probe = table.EXPORTERS_BY_NAME[settings.exporter].probe
        if check_endpoint and probe is not None:
            launcher.check_endpoint_in_background(probe(settings))
        for key, value in sorted(child_env.render(settings).items()):
            if fmt == "shell":
                click.echo(f"export {key}={shlex.quote(value)}")
            else:
                click.echo(f"{key}={_dotenv_quote(value)}")
    if resolved:
        click.echo("set -- " + " ".join(shlex.quote(arg) for arg in resolved))
        if settings.tracing:
            click.echo(f"instrument={shlex.quote(instrument)}")


@cli.command()
@click.option("--zipkin-endpoint", metavar="URL", default=None,
              help="Use this Zipkin instead of starting a local one.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True,
              help="Port of the demo web UI.")
@click.option("--zipkin-port", type=click.IntRange(1, 65535), default=9411, show_default=True,
              help="Port of the local Zipkin when one is started.")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None,
              help="Tiny model directory (default: written into the cache).")
def demo(zipkin_endpoint: str | None, port: int, zipkin_port: int,
         model_dir: str | None) -> None:
    """One traced demo synthesis: tiny model, local Zipkin, traced web UI, the trace's link."""
    from cosyvoice_otel.tools.demo import DemoError, run_demo

    if zipkin_endpoint:
        try:
            table.parse_http_url(zipkin_endpoint)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--zipkin-endpoint") from None
    try:
        from pathlib import Path

        run_demo(zipkin_endpoint, port, Path(model_dir) if model_dir else None, zipkin_port,
                 echo=click.echo)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown",
              show_default=True)
@click.option("--stage-map", "stage_map", type=click.Path(dir_okay=False), default=None,
              help="Also the stages and error reasons an app declares in its stage-map file.")
def schema(fmt: str, stage_map: str | None) -> None:
    """Print the tracing schema (span names, parents, attributes, error reasons)."""
    import json

    from cosyvoice_otel import schema as tracing_schema

    if stage_map:
        from cosyvoice_otel.instrumentation.stage_map import (
            StageMapError,
            declare_source,
            stage_source,
        )

        try:
            declare_source(stage_source(stage_map))
        except (StageMapError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--stage-map") from None

    if fmt == "json":
        click.echo(json.dumps(tracing_schema.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(tracing_schema.to_markdown(), nl=False)


@cli.command()
@click.option("--app", "app_url", default=None, metavar="URL",
              help="The running traced app (Gradio webui or FastAPI runtime server).")
@click.option("--grpc", "grpc_target", default=None, metavar="HOST:PORT",
              help="Instead of --app: the traced gRPC runtime server.")
@click.option("--zipkin", "zipkin_url", required=True, metavar="URL",
              help="Zipkin's base URL, e.g. http://localhost:9411.")
@click.option("--requests", "count", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Good requests to send (one bad input is always added).")
@click.option("--timeout", type=click.FloatRange(1, 600), default=60, show_default=True,
              help="Seconds to wait for the traces to reach Zipkin.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result (for CI).")
def verify(app_url: str | None, grpc_target: str | None, zipkin_url: str, count: int,
           timeout: float, as_json: bool) -> None:
    """Send real synthesis requests and check their traces in Zipkin against the schema."""
    from cosyvoice_otel.tools.verify import VerifyError, run_verify

    if (app_url is None) == (grpc_target is None):
        raise click.UsageError("give exactly one of --app URL and --grpc HOST:PORT")
    if grpc_target is not None:
        from cosyvoice_otel.tools.nginx import check_host_port

        try:
            check_host_port(grpc_target, "--grpc")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--grpc") from None
    for name, url in (("--app", app_url), ("--zipkin", zipkin_url)):
        if url is None:
            continue
        try:
            table.parse_http_url(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=name) from None

    def progress(plan: list) -> Any:
        if as_json:
            return None
        bar = click.progressbar(length=len(plan), label="waiting for traces in Zipkin",
                                file=sys.stderr)
        bar.__enter__()
        return bar

    try:
        report = run_verify(app_url, zipkin_url, count, progress, timeout, grpc_target)
    except VerifyError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        import json

        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(file=sys.stderr)
        width = max(len(c.name) for c in report.checks)
        for check in report.checks:
            mark = "PASS" if check.ok else "FAIL"
            click.echo(f"{mark}  {check.name:<{width}}  {check.reason}".rstrip())
        passed = sum(c.ok for c in report.checks)
        click.echo(f"{passed} passed, {len(report.checks) - passed} failed ({report.app_kind} app)")
    sys.exit(0 if report.ok else 1)


@cli.command()
@click.option("--zipkin", "zipkin_url", required=True, metavar="URL")
@click.option("--service", default=table.OPTIONS_BY_NAME["service_name"].default,
              show_default=True, help="The service name the traces were recorded under.")
@click.option("--lookback", default="1h", show_default=True, help="15m, 1h, 2d, ...")
@click.option("--limit", type=click.IntRange(1, 100000), default=10000, show_default=True,
              help="At most this many traces.")
@click.option("--by", "by", default=None, metavar="TAG",
              help="Compare groups side by side, e.g. --by service.version, --by "
                   "cosyvoice.load_trt, --by audio.snr_db (a numeric tag: its values in five "
                   "ranges of equal counts), or --by concurrency (in-flight level: 1, 2, 3-4, "
                   "5-8, 9+).")
@click.option("--include-warmup", is_flag=True,
              help="Keep warm-up requests (a process's first per mode and stream) in the "
                   "figures; left out by default, and counted.")
@click.option("--compare", "sides", multiple=True, metavar="KEY=VALUE",
              help="Give twice, e.g. --compare service.version=1.0 --compare "
                   "service.version=1.1: per stage p50/p95 of each side, the delta and a "
                   "verdict.")
@click.option("--same-input", is_flag=True,
              help="With --compare: pair the requests of the same input on both sides "
                   "(cosyvoice.input.fingerprint) and judge each stage with a paired test "
                   "(Wilcoxon signed-rank), beside the unpaired one on the same requests.")
@click.option("--first-chunk", is_flag=True,
              help="Where the time to the first audio chunk went: p50/p95 per part (queue, "
                   "text, prompt_audio, llm, flow, vocoder, other), for warm-up and steady "
                   "requests and per concurrency level.")
@click.option("--alert", "alerts", multiple=True, metavar="RULE",
              help="e.g. 'vocoder.p95>5s' (repeatable); exit 1 when one is breached.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Also write one self-contained HTML page.")
@click.option("--errors", "errors_reason", is_flag=False, flag_value="*", default=None,
              metavar="[REASON]",
              help="List the failing requests (those with error.type REASON, if given) with "
                   "their prompt audio's figures (SNR, level, silence, clipping) and Zipkin "
                   "links: e.g. --errors asr_empty_result.")
@click.option("--gateway", "gateway_service", default=None, metavar="SERVICE",
              help="The API gateway's service name (e.g. Traefik's 'gateway'): also count "
                   "the requests it refused before synthesis (auth, rate limit, upstream "
                   "unavailable), beside the app's errors.")
@click.option("--json", "as_json", is_flag=True)
def report(zipkin_url: str, service: str, lookback: str, limit: int, by: str | None,
           include_warmup: bool, sides: tuple[str, ...], same_input: bool, first_chunk: bool,
           alerts: tuple[str, ...], html_path: str | None, errors_reason: str | None,
           gateway_service: str | None, as_json: bool) -> None:
    """Per-stage latency (p50/p95/p99, share of request time), errors, slowest traces."""
    import json

    from cosyvoice_otel.tools import listening as lis
    from cosyvoice_otel.tools import report as rep
    from cosyvoice_otel.tools.zipkin import ZipkinClient, ZipkinError

    try:
        table.parse_http_url(zipkin_url)
        lookback_ms = rep.parse_lookback(lookback)
        rules = [rep.parse_rule(a) for a in alerts]
        compared = [rep.parse_side(side) for side in sides]
        if compared and (len(compared) != 2 or compared[0][0] != compared[1][0] or by):
            raise rep.ReportError("--compare takes two sides of the same key, e.g. --compare "
                                  "service.version=1.0 --compare service.version=1.1 "
                                  "(and no --by)")
        if same_input and not compared:
            raise rep.ReportError("--same-input pairs two sides: give --compare KEY=A "
                                  "--compare KEY=B")
    except (ValueError, rep.ReportError) as exc:
        raise click.UsageError(str(exc)) from None
    client = ZipkinClient(zipkin_url, timeout=120)
    try:
        # all of the service's traces: a failed request may have no cosyvoice.inference span
        traces = client.traces(service=service, lookback_ms=lookback_ms, limit=limit)
    except ZipkinError as exc:
        raise click.ClickException(str(exc)) from None
    if first_chunk:
        chunk_rows = lis.first_chunk(traces)
        click.echo(json.dumps(chunk_rows, indent=2) if as_json
                   else lis.first_chunk_text(chunk_rows))
        sys.exit(0)
    if same_input:
        (key, a), (_, b) = compared
        paired, counts = lis.same_input(traces, key, a, b, include_warmup)
        click.echo(json.dumps(lis.same_input_dict(paired, counts, key, a, b), indent=2)
                   if as_json else lis.same_input_text(paired, counts, key, a, b))
        sys.exit(0)
    if errors_reason is not None:
        reason = None if errors_reason == "*" else errors_reason
        rows = rep.failures(traces, reason, client.base_url)
        click.echo(json.dumps(rows, indent=2) if as_json else rep.failures_text(rows, reason))
        sys.exit(0)
    groups = rep.analyse(traces, compared[0][0] if compared else by, include_warmup)
    unknown = rep.unknown_stages(rules, groups)
    if unknown:
        raise click.UsageError(f"--alert {unknown[0].text!r}: no stage {unknown[0].stage!r} in "
                               "the schema or in the traces (a typo never fires)")
    note = rep.sampling_note(traces)
    if note and groups:  # on stderr: --json output stays one document
        click.echo(note, err=True)
    if not groups:
        raise click.ClickException(f"no synthesis traces of service {service!r} in the last "
                                   f"{lookback}")
    grouping = rep.by_note(groups, by)
    if grouping:
        click.echo(grouping, err=True)
    if compared:
        (key, a), (_, b) = compared
        missing = [side for side in (a, b) if not groups.get(side, rep.GroupStats(side)).requests]
        if missing:
            raise click.ClickException(f"no requests with {key}={missing[0]} in the last "
                                       f"{lookback} (seen: {', '.join(sorted(groups))})")
        stage_rows = rep.compare(groups, a, b)
        click.echo(json.dumps(rep.compare_dict(stage_rows, key, a, b, groups), indent=2)
                   if as_json else rep.compare_text(stage_rows, key, a, b, groups))
        if html_path:
            with open(html_path, "w", encoding="utf-8") as f:
                f.write(rep.compare_html(stage_rows, key, a, b, groups,
                                         f"cosyvoice compare: {service}"))
        sys.exit(0)
    refused: dict[str, int] | None = None
    if gateway_service:
        from cosyvoice_otel.tools import triage as tri

        try:
            edge = client.traces(service=gateway_service, lookback_ms=lookback_ms, limit=limit)
        except ZipkinError as exc:
            raise click.ClickException(str(exc)) from None
        refused = tri.refused_before_synthesis(edge)
    if as_json:
        document = rep.to_dict(groups, client.base_url)
        if refused is not None:
            document["refused_before_synthesis"] = {"gateway": gateway_service, **refused}
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(rep.to_text(groups, client.base_url))
        if refused is not None:
            click.echo(f"refused before synthesis by {gateway_service}: " + ", ".join(
                f"{cause} {count}" for cause, count in refused.items()))
    if html_path:
        with open(html_path, "w", encoding="utf-8") as f:
            f.write(rep.to_html(groups, client.base_url, f"cosyvoice report: {service}"))
    breaches = rep.evaluate(groups, rules)
    for line in breaches:
        click.echo(f"ALERT {line}", err=True)
    sys.exit(1 if breaches else 0)


@cli.command()
@click.option("--zipkin", "zipkin_url", default=None, metavar="URL",
              help="Zipkin's base URL to check (reachability, version, clock).")
@click.option("--cosyvoice-path", type=click.Path(file_okay=False, exists=True), default=None,
              help="The folder holding the cosyvoice package (default: where it imports from).")
@click.option("--model-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="A model directory: will ITS llm, flow and hift classes get their spans?")
@click.option("--stage", "stages", multiple=True, metavar="NAME=module:Class.method",
              help="Extra stage rows to take into account (as for run).")
@click.option("--metrics", "metrics_url", default=None, metavar="URL",
              help="A running app's /metrics (--metrics prometheus): the tracer's health "
                   "(exported, spooled, replayed, dropped by reason).")
def doctor(zipkin_url: str | None, cosyvoice_path: str | None, model_dir: str | None,
           stages: tuple[str, ...], metrics_url: str | None) -> None:
    """Check packages, instrumentors, Zipkin, Gradio and the stage map; exit 1 on a failure."""
    from cosyvoice_otel.instrumentation.stage_map import StageMapError, parse_stage_spec
    from cosyvoice_otel.tools.doctor import FAIL, run_doctor

    try:
        rows = tuple(parse_stage_spec(spec) for spec in stages)
    except StageMapError as exc:
        raise click.BadParameter(str(exc), param_hint="--stage") from None
    if metrics_url:
        try:
            table.parse_http_url(metrics_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics") from None
    lines = run_doctor(zipkin_url, cosyvoice_path, model_dir, rows, metrics_url)
    for line in lines:
        click.echo(f"{line.level:4s}  {line.what}: {line.detail}")
    sys.exit(1 if any(line.level == FAIL for line in lines) else 0)


@cli.command()
@click.option("--zipkin", "zipkin_url", required=True, metavar="URL")
@click.option("--at", "at", default="now", show_default=True, metavar="TIME",
              help="When: 'yesterday 15:00', '15:00', 'now', or ISO 8601 "
                   "('2026-12-06T15:00:00+08:00'); local time when no offset is given.")
@click.option("--window", default="30m", show_default=True, metavar="DURATION",
              help="How much time around --at (half before, half after): 15m, 1h, 2d, ...")
@click.option("--service", default=None,
              help="Only traces with a span of this service (default: every service).")
@click.option("--trace-id", "trace_id", default=None, metavar="ID",
              help="Only this trace (the traceresponse a complaint quotes: its 2nd field).")
@click.option("--limit", type=click.IntRange(1, 100000), default=10000, show_default=True,
              help="At most this many traces from the window.")
@click.option("--audio", "audio_path", default=None, metavar="FILE.wav",
              type=click.Path(exists=True, dir_okay=False),
              help="Find the trace of a WAV the app produced: by the digest of its samples "
                   "(tts.output.file_digest, tts.output.digest) or its name; failing both, "
                   "the requests around the file's time that made as much audio.")
@click.option("--json", "as_json", is_flag=True)
def triage(zipkin_url: str, at: str, window: str, service: str | None, trace_id: str | None,
           limit: int, audio_path: str | None, as_json: bool) -> None:
    """Each failed or refused request around a time: where it stopped (gateway auth, rate
    limit, upstream unavailable, the CosyVoice stage), its status and reason, its link."""
    import dataclasses
    import json
    import os
    import re
    import time

    from cosyvoice_otel.tools import report as rep
    from cosyvoice_otel.tools import triage as tri
    from cosyvoice_otel.tools.when import parse_time
    from cosyvoice_otel.tools.zipkin import ZipkinClient, ZipkinError

    try:
        table.parse_http_url(zipkin_url)
        moment = parse_time(at)
        window_ms = rep.parse_lookback(window, "--window")
        if trace_id is not None and not re.fullmatch(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}",
                                                     trace_id.strip()):
            raise ValueError(f"--trace-id must be 16 or 32 hex digits, got {trace_id[:40]!r}")
    except (ValueError, rep.ReportError) as exc:
        raise click.UsageError(str(exc)) from None
    client = ZipkinClient(zipkin_url, timeout=120)
    if audio_path is not None:
        try:
            rows, seconds = tri.find_audio(client, audio_path, service, int(time.time() * 1000),
                                           window_ms, os.stat(audio_path).st_mtime)
        except ZipkinError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) if as_json
                   else tri.audio_text(audio_path, rows, seconds), nl=as_json)
        sys.exit(0 if rows else 1)
    end_ms = int(moment.timestamp() * 1000) + window_ms // 2
    start_ms = end_ms - window_ms
    try:
        if trace_id is not None:
            traces = [client.trace(trace_id.strip().lower())]
            start_ms, end_ms = 0, 1 << 50
        else:
            traces = client.traces(service=service, end_ts_ms=end_ms, lookback_ms=window_ms,
                                   limit=limit)
    except ZipkinError as exc:
        raise click.ClickException(str(exc)) from None
    findings = tri.triage(traces, client.base_url, start_ms * 1000, end_ms * 1000)
    if as_json:
        click.echo(json.dumps(tri.to_dict(findings, start_ms * 1000, end_ms * 1000), indent=2))
    else:
        where = f"in trace {trace_id}" if trace_id else (
            f"from {tri.local_time(start_ms * 1000)} to {tri.local_time(end_ms * 1000)}"
            + (f" (service {service})" if service else ""))
        click.echo(tri.to_text(findings, where), nl=False)


@cli.command("nginx-config")
@click.option("--upstream", "upstreams", required=True, multiple=True, metavar="HOST:PORT",
              help="The traced app; repeat for replicas (one upstream block, round robin).")
@click.option("--listen", default="0.0.0.0:8080", show_default=True, metavar="ADDR:PORT")
@click.option("--access-log", default="/var/log/nginx/cosyvoice-access.log", show_default=True,
              metavar="PATH", help="Access log with trace_id= and span_id= on each line.")
def nginx_config(upstreams: tuple[str, ...], listen: str, access_log: str) -> None:
    """Print nginx blocks (include inside http { }) that inject valid B3 headers."""
    from cosyvoice_otel.tools import nginx

    try:
        click.echo(nginx.render(list(upstreams), listen, access_log), nl=False)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@cli.command("gateway-config")
@click.option("--upstream", "upstreams", required=True, multiple=True, metavar="HOST:PORT",
              help="The traced app; repeat for replicas.")
@click.option("--auth", required=True, metavar="URL",
              help="The auth service Traefik's forwardAuth asks (examples/gateway/auth.py).")
@click.option("--rate", required=True, metavar="AVG[/BURST]",
              help="Requests per second per client address, and the burst above it.")
@click.option("--otlp-endpoint", required=True, metavar="URL",
              help="Where Traefik sends its spans: a Collector's OTLP/HTTP traces URL.")
@click.option("--listen", default="0.0.0.0:8080", show_default=True, metavar="ADDR:PORT")
@click.option("--service-name", default="gateway", show_default=True,
              help="Traefik's service name in Zipkin.")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for traefik.yaml (static) and dynamic.yaml (its file provider's).")
def gateway_config(upstreams: tuple[str, ...], auth: str, rate: str, otlp_endpoint: str,
                   listen: str, service_name: str, out_dir: Path) -> None:
    """Write Traefik v3's configuration: API gateway, auth, rate limit, each a span."""
    from cosyvoice_otel.tools import gateway

    try:
        files = gateway.render(list(upstreams), auth, rate, otlp_endpoint, out_dir, listen,
                               service_name)
        written = gateway.write(files, out_dir)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.UsageError(f"--out {out_dir}: {exc.strerror or exc}") from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"start: OTEL_PROPAGATORS={gateway.PROPAGATORS} traefik "
               f"--configFile={written[0].resolve()}")


@cli.group()
def zipkin() -> None:
    """A local Zipkin server from the official jar (for users without Docker)."""


@zipkin.command("start")
@click.option("--port", type=click.IntRange(1, 65535), default=9411, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address Zipkin listens on (0.0.0.0: every interface; it holds every "
                   "trace, for anyone who reaches it).")
def zipkin_start(port: int, host: str) -> None:
    """Fetch the jar (Maven Central, cached) and start Zipkin in the background."""
    from cosyvoice_otel.tools import zipkin_server

    try:
        table.parse_host(host)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from None
    try:
        server = zipkin_server.start_detached(port, host)
    except zipkin_server.ZipkinServerError as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    click.echo(f"Zipkin is up: {server.base_url} (pid {server.pid}); "
               f"spans go to {server.endpoint}")


@zipkin.command("stop")
def zipkin_stop() -> None:
    """Stop the Zipkin started by `zipkin start`."""
    from cosyvoice_otel.tools import zipkin_server

    click.echo("stopped" if zipkin_server.stop_detached() else "no Zipkin was running")


@zipkin.command("status")
def zipkin_status() -> None:
    """Exit 0 when the Zipkin started by `zipkin start` is up, 1 otherwise."""
    from cosyvoice_otel.tools import zipkin_server

    server = zipkin_server.running()
    if server is None or not server.client().health():
        click.echo("not running")
        sys.exit(1)
    click.echo(f"up: {server.base_url} (pid {server.pid})")


def _dotenv_quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:,=@+" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: click in non-standalone mode so every error is one line."""
    try:
        result = cli.main(args=argv, prog_name="cosyvoice-traced", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.UsageError as exc:
        message = exc.format_message().splitlines()[0] if exc.format_message() else "usage error"
        sys.stderr.write(f"cosyvoice-traced: error: {message}\n")
        return EXIT_USAGE
    except click.ClickException as exc:
        sys.stderr.write(f"cosyvoice-traced: error: {exc.format_message()}\n")
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
