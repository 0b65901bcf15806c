"""Which tests run which line: the map the generated-mutant run picks its tests from (issue 31).

A mutant is worth running only against the tests that execute its line, and those include the
end-to-end ones: ``verify``, ``doctor``, the launcher and the Kafka exporter run in launched
processes that no unit test reaches. This builds the map once from a real run of the suite
under coverage.py (the measuring tool mutmut itself uses), with every launched ``.venv`` Python
measured too (``COVERAGE_PROCESS_START``, read by coverage's ``.pth`` hook):

    .venv/bin/python -m tests.support.coverage_map [unit|all]   # unit: ~2 min; all: the suite

Each test's lines are recorded under its node id: in the test process by switching
coverage's context when the test's setup starts (this file is also the pytest plugin that
does it), in a launched process through ``COV_CTX``, which the plugin sets before the test's
fixtures start anything and the process's coverage reads as its static context. A process a
shared fixture starts is credited to the first test that needed it (a coarser map is still a
true one: the mutant run then runs that test, and a mutant it misses counts as missed).

The map is ``.cache/coverage-map/<kind>.json``: per module its source's hash and, per line,
the node ids. A module edited since is looked up as a whole (every test that ran any of its
lines), and so is a line run at import (before any test's context: a decorator's arguments,
a table built when the module loads), which every test importing the module depends on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPS = ROOT / ".cache" / "coverage-map"
PACKAGE = "cosyvoice_otel"

# per kind, what pytest runs: unit alone serially (one process, quickest to map); all in the
# suite's own workers
KINDS: dict[str, list[str]] = {
    "unit": ["tests/unit", "-n", "0"],
    "all": ["tests"],
}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Every module of the package imported before any test, under the empty context: a line
    run at import (a decorator's arguments, a table built when the module loads) is then
    known as such, whichever test would have imported the module first."""
    import importlib
    import pkgutil

    package = importlib.import_module(PACKAGE)
    for module in pkgutil.walk_packages(package.__path__, PACKAGE + "."):
        if not module.name.endswith("__main__"):
            try:
                importlib.import_module(module.name)
            except Exception:  # noqa: BLE001, S112 - an optional dependency missing here
                continue


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    os.environ["COV_CTX"] = item.nodeid  # before any fixture of this test launches a process
    import coverage

    current = coverage.Coverage.current()
    if current is not None:
        current.switch_context(item.nodeid)


_durations: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Each process's test durations beside its coverage data: the mutant run tries a line's
    quickest tests first."""
    folder = os.environ.get("COVERAGE_MAP_RUN")
    if folder and _durations:
        Path(folder, f"durations-{os.getpid()}.json").write_text(json.dumps(_durations))


def source_hash(module: str) -> str:
    return hashlib.sha256((ROOT / module).read_bytes()).hexdigest()[:16]


def _rcfile(folder: Path) -> Path:
    rc = folder / "coveragerc"
    rc.write_text(
        "[run]\n"
        f"source = {ROOT / PACKAGE}\n"
        f"data_file = {folder / 'data'}\n"
        "parallel = true\n"
        "sigterm = true\n"
        # the launcher execs opentelemetry-instrument, which execs the app: each image saves
        # its lines before the exec
        "patch = execv, _exit\n"
        # a launched process's context: the test that started it (empty in the test process,
        # whose context the plugin switches per test)
        "context = ${COV_CTX}\n"
        "disable_warnings = no-data-collected, module-not-measured, module-not-imported, "
        "couldnt-parse, no-ctracer\n", encoding="utf-8")
    return rc


def build(kind: str) -> Path:
    folder = MAPS / f"{kind}.run"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rc = _rcfile(folder)
    # every .venv Python started below reads the rc file itself (coverage's .pth hook), so a
    # launched process takes COV_CTX from ITS environment: the test that launched it
    # (``patch = subprocess`` would hand children the parent's resolved, empty, context)
    env = {**os.environ, "COVERAGE_RCFILE": str(rc), "COVERAGE_PROCESS_START": str(rc),
           "CI": "true", "COVERAGE_MAP_RUN": str(folder)}
    env.pop("COV_CTX", None)
    python = str(ROOT / ".venv" / "bin" / "python")
    # failing tests still map their lines: the exit status is not what this run is for
    subprocess.run([python, "-m", "coverage", "run", "--rcfile", str(rc), "-m", "pytest", "-q",
                    "-p", "no:randomly", "-p", "no:cacheprovider", "-p",
                    "tests.support.coverage_map", *KINDS[kind]], cwd=ROOT, env=env, check=False)
    subprocess.run([python, "-m", "coverage", "combine", "--rcfile", str(rc), "-q"], cwd=ROOT,
                   env=env, check=True)
    import coverage

    data = coverage.CoverageData(basename=str(folder / "data"))
    data.read()
    tests: dict[str, int] = {}
    modules: dict[str, dict[str, object]] = {}
    for measured in sorted(data.measured_files()):
        module = os.path.relpath(measured, ROOT)
        if not module.startswith(PACKAGE + "/"):
            continue
        lines: dict[str, list[int]] = {}
        imported: list[int] = []
        for line, contexts in sorted(data.contexts_by_lineno(measured).items()):
            ids = sorted({tests.setdefault(c, len(tests)) for c in contexts if c})
            if ids:
                lines[str(line)] = ids
            if "" in contexts:  # run before any test: at import, while pytest collected
                imported.append(line)
        modules[module] = {"sha": source_hash(module), "lines": lines, "imported": imported}
    durations: dict[str, float] = {}
    for part in folder.glob("durations-*.json"):
        durations.update(json.loads(part.read_text(encoding="utf-8")))
    out = MAPS / f"{kind}.json"
    out.write_text(json.dumps({"tests": sorted(tests, key=tests.__getitem__),
                               "durations": durations, "modules": modules}), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    return out


def node_id(recorded: str) -> str:
    """A test's node id as pytest takes it on a command line: a map built under xdist's
    ``--dist loadgroup`` records ``path::test@group`` (the group of its ``xdist_group`` mark),
    a name no run of one test can select (pytest stops at an unknown id)."""
    return _GROUP_SUFFIX.sub("", recorded)


_GROUP_SUFFIX = re.compile(r"@[\w.-]+$")


class CoverageMap:
    """The union of the maps built: ``tests_for(module, first, last)`` -> node ids."""

    def __init__(self) -> None:
        self.maps = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(MAPS.glob("*.json"))]
        for one in self.maps:
            one["tests"] = [node_id(t) for t in one["tests"]]
            one["durations"] = {node_id(t): d for t, d in one.get("durations", {}).items()}
        self._hashes: dict[str, str] = {}  # a module's source read once per run, not per mutant

    def _hash(self, module: str) -> str:
        if module not in self._hashes:
            self._hashes[module] = source_hash(module)
        return self._hashes[module]

    def duration(self, test: str) -> float:
        """Seconds the test took when mapped (unknown: a minute, tried last)."""
        return min((one.get("durations", {}).get(test, 60.0) for one in self.maps), default=60.0)

    def tests_for(self, module: str, first: int, last: int) -> set[str]:
        found: set[str] = set()
        for one in self.maps:
            entry = one["modules"].get(module)
            if entry is None:
                continue
            names = one["tests"]
            span = range(first, last + 1)
            if entry["sha"] == self._hash(module) and not set(entry.get("imported", ())) & set(
                    span):
                rows = [entry["lines"].get(str(n), []) for n in span]
            else:  # edited since the map, or a line run at import (a decorator's arguments, a
                # table built when the module loads): every test that ran the module
                rows = list(entry["lines"].values())
            found.update(names[i] for row in rows for i in row)
        return found


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "unit"))
