"""``cosyvoice-traced doctor``: is this environment ready to trace CosyVoice into Zipkin?

Each line is ok, warn or fail; the exit status is 1 when any line fails. It checks the OTel
packages and versions, which instrumentors ``opentelemetry-instrument`` will load, Zipkin's
reachability, version and clock offset (its ``Date`` header), the Gradio version, and the stage
map against the installed ``cosyvoice``: found by READING its source with ``ast`` (no torch-heavy
import), so a renamed or missing method is reported before the app runs.
"""

from __future__ import annotations

import ast
import email.utils
import importlib.metadata as md
import importlib.util
import os
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation.stage_map import PART_ROLES, Stage, build
from cosyvoice_otel.urls import shown, split_credentials

OK, WARN, FAIL = "ok", "warn", "fail"
OTEL_PACKAGES = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-instrumentation",
                 "opentelemetry-distro", "opentelemetry-exporter-zipkin-json",
                 "opentelemetry-propagator-b3", "opentelemetry-instrumentation-threading",
                 "opentelemetry-instrumentation-fastapi")
GRADIO_SUPPORTED = ("5.4.", "6.")


@dataclass
class Line:
    level: str
    what: str
    detail: str


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_packages() -> Iterator[Line]:
    versions = {p: _version(p) for p in OTEL_PACKAGES}
    for package, version in versions.items():
        yield Line(OK if version else FAIL, package, version or "not installed")
    sdk, inst = versions["opentelemetry-sdk"], versions["opentelemetry-instrumentation"]
    if sdk and inst and not _compatible(sdk, inst):
        yield Line(WARN, "release set", f"sdk {sdk} with instrumentation {inst}: not released "
                   "together (1.N pairs with 0.(N+21)b)")


def _compatible(sdk: str, inst: str) -> bool:
    try:
        return int(inst.split(".")[1].split("b")[0]) == int(sdk.split(".")[1]) + 21
    except (IndexError, ValueError):
        return True


def check_instrumentors() -> Iterator[Line]:
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    disabled = {x.strip() for x in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
                                                  "").split(",") if x.strip()}
    loads, skipped = [], []
    for ep in md.entry_points(group="opentelemetry_instrumentor"):
        if ep.name in disabled:
            skipped.append(f"{ep.name} (disabled)")
            continue
        conflict = get_dist_dependency_conflicts(ep.dist) if ep.dist else None
        if conflict:
            skipped.append(f"{ep.name} ({conflict})")
        else:
            loads.append(ep.name)
    yield Line(OK if "cosyvoice" in loads else FAIL, "cosyvoice instrumentor",
               "will load" if "cosyvoice" in loads else "will NOT load (entry point missing?)")
    yield Line(OK if "threading" in loads else WARN, "threading instrumentor",
               "will load (LLM worker thread joins the trace)" if "threading" in loads else
               "missing: acoustic_model spans will be orphaned")
    yield Line(OK, "instrumentors that load", ", ".join(sorted(loads)) or "none")
    if skipped:
        yield Line(OK, "instrumentors skipped", ", ".join(sorted(skipped)))


def check_gradio() -> Iterator[Line]:
    version = _version("gradio")
    if version is None:
        yield Line(OK, "gradio", "not installed (FastAPI/gRPC servers only)")
    elif version.startswith(GRADIO_SUPPORTED):
        yield Line(OK, "gradio", f"{version} (supported: 5.4.x, 6.x)")
    else:
        yield Line(WARN, "gradio", f"{version} is not tested (supported: 5.4.x, 6.x)")


def _open(url: str) -> Any:
    """GET ``url``; credentials in it (``http://user:pass@host``) go as basic auth (urllib
    does not read them from the URL)."""
    plain, auth = split_credentials(url)
    request = urllib.request.Request(plain, headers={"Authorization": auth} if auth else {})
    return urllib.request.urlopen(request, timeout=5)


def _said(exc: BaseException, url: str) -> str:
    """An error's text, the URL's credentials never in it."""
    text = str(exc)
    plain, auth = split_credentials(url)
    if auth:
        userinfo = url.split("//", 1)[-1].split("@", 1)[0]
        text = text.replace(userinfo, "***")
    return text


def check_zipkin(base_url: str | None) -> Iterator[Line]:
    if not base_url:
        yield Line(WARN, "zipkin", "no --zipkin given: not checked")
        return
    base_url = base_url.rstrip("/")
    try:
        started = time.time()
        with _open(f"{base_url}/info") as resp:
            info = resp.read().decode("utf-8", "replace")
            date = resp.headers.get("Date")
        finished = time.time()
    except (OSError, ValueError) as exc:
        yield Line(FAIL, "zipkin", f"{shown(base_url)} did not answer ({_said(exc, base_url)})")
        return
    import json

    try:
        version = json.loads(info).get("zipkin", {}).get("version", "?")
    except ValueError:
        version = "?"
    yield Line(OK, "zipkin", f"{shown(base_url)} answers, version {version}")
    if date:
        offset, within = clock_offset(f"{base_url}/health", _seconds(date), started, finished)
        level = OK if abs(offset) < 2 else WARN
        yield Line(level, "clock offset vs zipkin", f"{offset:+.3f} s (±{within * 1000:.0f} ms)"
                   + ("" if level == OK else " (spans will look shifted in Zipkin's UI)"))


MAX_CLOCK_PROBE_S = 1.5  # a Date header changes once a second: at most this long to see it


def _seconds(date: str) -> float:
    return email.utils.parsedate_to_datetime(date).timestamp()


def clock_offset(url: str, first: float, started: float, finished: float,
                 now: Any = time.time) -> tuple[float, float]:
    """Zipkin's clock minus ours, and how far off that can be. The ``Date`` header says whole
    seconds (read once, it is up to 1 s off: a Zipkin on this very machine seemed 0.8 s
    behind); so requests follow one another until the header's second changes: the server
    crossed that second between the last request that still said the old one and the first
    that says the new one, which places it to within their span (milliseconds)."""
    before, previous = started, first
    deadline = now() + MAX_CLOCK_PROBE_S
    while now() < deadline:
        sent = now()
        try:
            with _open(url) as resp:
                resp.read()
                date = resp.headers.get("Date")
        except (OSError, ValueError):
            break
        answered = now()
        second = _seconds(date) if date else previous
        if second > previous:  # the server's clock reached ``second`` in (before, answered]
            return second - (before + answered) / 2, (answered - before) / 2
        before, previous = sent, second
    return first + 0.5 - (started + finished) / 2, 0.5 + (finished - started) / 2


def _source_classes(path: str) -> dict[str, set[str]]:
    """Classes in a module file -> the methods each defines, read with ast."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    out: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body
                              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            out[node.name].update(f"__base__:{ast.unparse(b)}" for b in node.bases)
    return out


def _module_file(module: str, roots: list[str]) -> str | None:
    parts = module.split(".")
    for root in roots:
        for candidate in (os.path.join(root, *parts) + ".py",
                          os.path.join(root, *parts, "__init__.py")):
            if os.path.isfile(candidate):
                return candidate
    return None


def _has_method(classes: dict[str, set[str]], cls: str, method: str, depth: int = 0) -> bool:
    members = classes.get(cls)
    if members is None or depth > 10:
        return False
    if method in members:
        return True
    bases = [b.split(":", 1)[1].split(".")[-1] for b in members if b.startswith("__base__:")]
    return any(_has_method(classes, base, method, depth + 1) for base in bases)


def check_stage_map(cosyvoice_path: str | None, stages: tuple[Stage, ...] = ()) -> Iterator[Line]:
    if not cosyvoice_path and importlib.util.find_spec("cosyvoice") is None:
        yield Line(WARN, "stage map", "cosyvoice is not importable here; give "
                   "--cosyvoice-path (the folder that holds the cosyvoice package)")
        return
    roots = _roots(cosyvoice_path)
    missing: list[str] = []
    checked = 0
    modules: dict[str, dict[str, set[str]] | None] = {}
    for row in build("cosyvoice", stages):
        if row.optional:
            continue
        if row.module not in modules:
            path = _module_file(row.module, roots)
            modules[row.module] = _source_classes(path) if path else None
        classes = modules[row.module]
        cls, _, method = row.qualname.rpartition(".")
        checked += 1
        if classes is None:
            missing.append(f"{row.target} (no module {row.module})")
        elif cls and cls not in classes:
            missing.append(f"{row.target} (no class {cls})")
        elif cls and not _has_method(classes, cls, method):
            missing.append(f"{row.target} (no method {method}: renamed?)")
    if missing:
        for item in missing:
            yield Line(WARN if " (no class " in item else FAIL, "stage target", item)
    yield Line(OK if not missing else WARN, "stage map",
               f"{checked - len(missing)} of {checked} targets found in {roots[0]}")


# A model directory's config, per version (upstream's AutoModel looks in this order), and the
# model runner class that version's API builds.
MODEL_CONFIGS = (("cosyvoice.yaml", "CosyVoiceModel"), ("cosyvoice2.yaml", "CosyVoice2Model"),
                 ("cosyvoice3.yaml", "CosyVoice3Model"))
_NEW = re.compile(r"^(?P<part>[A-Za-z_]\w*):\s*!new:(?P<path>[\w.]+)\s*(#.*)?$")


def read_model_classes(config_path: str) -> dict[str, str]:
    """Top-level ``part: !new:module.Class`` lines of a CosyVoice config -> {part: path}.
    Read as text: instantiating the config (what hyperpyyaml does) would build the model."""
    found: dict[str, str] = {}
    with open(config_path, encoding="utf-8") as f:
        for line in f:
            match = _NEW.match(line.rstrip("\n"))
            if match:
                found[match["part"]] = match["path"]
    return found


def _imports(path: str) -> dict[str, tuple[str, str]]:
    """Names a module file imports with ``from X import Y [as Z]`` -> Z: (X, Y)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    return {alias.asname or alias.name: (node.module, alias.name)
            for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
            for alias in node.names}


def find_method(module: str, cls: str, method: str, roots: list[str],
                depth: int = 0) -> str | None:
    """``module:Class`` that defines ``method`` for ``module.cls`` (the class itself or a base,
    followed across ``from X import Y`` imports), by reading source; None if not found."""
    path = _module_file(module, roots)
    if path is None or depth > 10:
        return None
    classes = _source_classes(path)
    if cls not in classes:
        origin = _imports(path).get(cls)
        return find_method(*origin, method, roots, depth + 1) if origin else None
    if method in classes[cls]:
        return f"{module}:{cls}"
    for base in (b.split(":", 1)[1] for b in classes[cls] if b.startswith("__base__:")):
        name = base.split(".")[-1]
        found = find_method(module, name, method, roots, depth + 1) if "." not in base else None
        if found is None and "." in base:  # module.Class: only our own package's are readable
            found = find_method(base.rpartition(".")[0], name, method, roots, depth + 1)
        if found:
            return found
    return None


def _class_exists(module: str, cls: str, roots: list[str]) -> bool:
    path = _module_file(module, roots)
    return path is not None and (cls in _source_classes(path) or cls in _imports(path))


def check_model_dir(model_dir: str, cosyvoice_path: str | None,
                    stages: tuple[Stage, ...] = ()) -> Iterator[Line]:
    """Will a request of THIS model get every stage span? Its config names the llm, flow and
    hift classes; each must have the method its role traces (or a ``--stage`` row)."""
    config = next(((name, model) for name, model in MODEL_CONFIGS
                   if os.path.isfile(os.path.join(model_dir, name))), None)
    if config is None:
        names = ", ".join(name for name, _ in MODEL_CONFIGS)
        yield Line(FAIL, "model config", f"none of {names} in {model_dir}")
        return
    name, model_class = config
    classes = read_model_classes(os.path.join(model_dir, name))
    yield Line(OK, "model config", f"{name} (runner {model_class}): "
               + ", ".join(f"{part}={classes[part]}" for part in ("llm", "flow", "hift")
                           if part in classes))
    roots = _roots(cosyvoice_path)
    user_rows = {row.target: row for row in stages}
    runner = find_method("cosyvoice.cli.model", model_class, "token2wav", roots)
    yield Line(OK if runner else FAIL, "model.tts/token2wav",
               f"{model_class} found ({runner})" if runner else
               f"cosyvoice.cli.model:{model_class} not found in {roots[0] if roots else '?'}")
    for role in (r for r in PART_ROLES if r.required):
        path = classes.get(role.path)
        if path is None:
            yield Line(FAIL, role.span, f"the config has no '{role.path}: !new:...' line")
            continue
        module, _, cls = path.rpartition(".")
        owner = find_method(module, cls, role.method, roots)
        if owner is not None:
            yield Line(OK, role.span, f"{cls}.{role.method} (defined by {owner}) traced by "
                       f"the {role.path} role")
            continue
        named = [row for row in user_rows.values() if row.module == module
                 and row.qualname.split(".")[0] == cls and row.span == role.span]
        if named:
            yield Line(OK, role.span, f"traced by --stage {named[0].span}={named[0].target}")
        elif not _class_exists(module, cls, roots):
            yield Line(FAIL, role.span, f"class {path} not found (looked in "
                       f"{', '.join(roots[:2])}): no {role.span} span. Fix: put its package on "
                       f"the path, or --stage {role.span}={module}:{cls}.<method>")
        else:
            yield Line(FAIL, role.span, f"{path} has no {role.method}() method: no "
                       f"{role.span} span. Fix: --stage {role.span}={module}:{cls}.<method>")


def _roots(cosyvoice_path: str | None) -> list[str]:
    """Where source is read from: --cosyvoice-path (or where cosyvoice imports from), then the
    working directory and sys.path, for a fork's own package."""
    roots = [cosyvoice_path] if cosyvoice_path else []
    if not roots:
        spec = importlib.util.find_spec("cosyvoice")
        if spec is not None and spec.submodule_search_locations:
            roots.append(os.path.dirname(list(spec.submodule_search_locations)[0]))
    return roots + [os.getcwd()] + [p for p in sys.path if p and os.path.isdir(p)]


def read_health(text: str) -> dict[str, float]:
    """The tracer-health samples of a /metrics page: ``{name or name{reason}: value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("cosyvoice_otel_"):
                continue
            reason = sample.labels.get(s.DROP_REASON)
            key = f"{sample.name}{{{reason}}}" if reason else sample.name
            out[key] = out.get(key, 0.0) + sample.value
    return out


def check_metrics(url: str) -> Iterator[Line]:
    """The tracer's health counters of a running app (``--metrics prometheus``)."""
    try:
        with _open(url) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        yield Line(FAIL, "tracer health", f"{shown(url)} did not answer ({_said(exc, url)})")
        return
    url = shown(url)
    try:
        health = read_health(text)
    except ValueError as exc:
        yield Line(FAIL, "tracer health", f"{url} is not a Prometheus /metrics page ({exc})")
        return
    if not health:
        yield Line(WARN, "tracer health", f"{url} has no cosyvoice_otel_* metrics (was the app "
                                          "started with --metrics prometheus?)")
        return

    def n(name: str) -> int:
        return int(health.get(f"cosyvoice_otel_{name}", 0))

    yield Line(OK, "tracer health", f"spans exported {n('spans_exported_total')}, spooled "
               f"{n('spans_spooled_total')}, replayed {n('spans_replayed_total')}; export "
               f"failures {n('export_failures_total')}; tracing errors "
               f"{n('tracing_errors_total')}")
    dropped = {reason: n(f"spans_dropped_total{{{reason}}}") for reason in s.DROP_REASONS}
    lost = {reason: count for reason, count in dropped.items() if count}
    if lost:
        yield Line(WARN, "spans dropped", ", ".join(f"{r} {c}" for r, c in lost.items())
                   + " (traces in Zipkin are incomplete; the app is unaffected)")
    else:
        yield Line(OK, "spans dropped", "none")
    spool = n("spool_size_bytes")
    yield Line(WARN if spool else OK, "spool", f"{spool} bytes waiting" + (
        " (Zipkin unreachable, or replaying)" if spool else ""))


def run_doctor(zipkin: str | None, cosyvoice_path: str | None, model_dir: str | None = None,
               stages: tuple[Stage, ...] = (), metrics_url: str | None = None) -> list[Line]:
    lines: list[Line] = []
    checks = [check_packages(), check_instrumentors(), check_gradio(), check_zipkin(zipkin),
              check_stage_map(cosyvoice_path, stages)]
    if model_dir:
        checks.append(check_model_dir(model_dir, cosyvoice_path, stages))
    if metrics_url:
        checks.append(check_metrics(metrics_url))
    for check in checks:
        lines.extend(check)
    return lines
