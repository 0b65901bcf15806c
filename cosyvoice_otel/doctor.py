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
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from .instrumentation.stage_map import Stage, build

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


def check_zipkin(base_url: str | None) -> Iterator[Line]:
    if not base_url:
        yield Line(WARN, "zipkin", "no --zipkin given: not checked")
        return
    base_url = base_url.rstrip("/")
    try:
        started = time.time()
        with urllib.request.urlopen(f"{base_url}/info", timeout=5) as resp:
            info = resp.read().decode("utf-8", "replace")
            date = resp.headers.get("Date")
        finished = time.time()
    except OSError as exc:
        yield Line(FAIL, "zipkin", f"{base_url} did not answer ({exc})")
        return
    import json

    try:
        version = json.loads(info).get("zipkin", {}).get("version", "?")
    except ValueError:
        version = "?"
    yield Line(OK, "zipkin", f"{base_url} answers, version {version}")
    if date:
        server = email.utils.parsedate_to_datetime(date).timestamp()
        offset = server - (started + finished) / 2  # Date has 1 s resolution
        level = OK if abs(offset) < 2 else WARN
        yield Line(level, "clock offset vs zipkin", f"{offset:+.1f} s"
                   + ("" if level == OK else " (spans will look shifted in Zipkin's UI)"))


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
    roots = [cosyvoice_path] if cosyvoice_path else []
    if not roots:
        spec = importlib.util.find_spec("cosyvoice")
        if spec is None or not spec.submodule_search_locations:
            yield Line(WARN, "stage map", "cosyvoice is not importable here; give "
                       "--cosyvoice-path (the folder that holds the cosyvoice package)")
            return
        roots = [os.path.dirname(list(spec.submodule_search_locations)[0])]
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


def run_doctor(zipkin: str | None, cosyvoice_path: str | None) -> list[Line]:
    lines: list[Line] = []
    for check in (check_packages(), check_instrumentors(), check_gradio(), check_zipkin(zipkin),
                  check_stage_map(cosyvoice_path)):
        lines.extend(check)
    return lines
