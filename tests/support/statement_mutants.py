"""Generated realistic bugs: a statement deleted, a call's two arguments swapped (issue 31).

mutmut (TESTING.md) changes operators and constants. This script makes the other kind, the
bugs that pass review: for every function of every module of ``cosyvoice_otel/`` (``tools/``
and the launcher included) it lists each statement that can be deleted (replaced by ``pass``:
a forgotten line) and each call whose first two positional arguments can be swapped (a field
swap); it draws a seeded sample (``--sample``: that many over the package, each module's
share as large as its share of the mutants; ``--per-module``: that many from each), applies
ONE mutant to a copy of the tree (``realistic_mutants.copy_tree``), runs there the tests
that execute the mutated line, unit AND end-to-end (``coverage_map``: built from a real run
of the suite, launched processes measured too), and counts the mutant caught when they fail.

    .venv/bin/python -m tests.support.coverage_map all      # once: which tests run which line
    .venv/bin/python -m tests.support.statement_mutants [--sample N | --per-module N]
        [--seed S] [--jobs J] [--e2e N] [--only KEY ...] [--record] [MODULE ...]

First the selected tests run once on the UNMUTATED copy: a test that fails there is dropped
from every mutant's selection (a failure the mutant did not cause is never counted as a
catch). A mutant no test executes is a survivor without a run. Prints one line per mutant
(``caught`` / ``SURVIVED`` / ``equiv.``) and the score; ``--record`` writes them to
``tests/support/statement-mutants.txt``, which ``tests/mutation_report.py`` shows beside
mutmut's scores. Survivors no input can tell apart are listed in ``EQUIVALENT`` with why;
the others count as missed; the exit status is 1 below ``TARGET``.
"""

from __future__ import annotations

import ast
import datetime
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from tests.support.coverage_map import CoverageMap
from tests.support.realistic_mutants import copy_tree

ROOT = Path(__file__).resolve().parents[2]
TARGET = 0.95
RECORD = ROOT / "tests" / "support" / "statement-mutants.txt"
# per mutant, at most this many end-to-end tests, the quickest first (every unit test that
# runs the line runs): a launched app costs tens of seconds, and the quickest few that run a
# line are the likeliest to look at what it does
E2E_PER_MUTANT = 3
# the modules with nothing to mutate are skipped by mutants() itself; these are not code
SKIP = frozenset({"cosyvoice_otel/version.py"})


def modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "cosyvoice_otel").rglob("*.py")
                  if str(p.relative_to(ROOT)) not in SKIP)


# calls whose two arguments commute: swapping them is no bug
SYMMETRIC = frozenset({"max", "min"})

# survivors no input can tell apart from the code, each with why (key: module:function+line
# offset in it:kind)
EQUIVALENT: dict[str, str] = {
    "cosyvoice_otel/masking.py:__init__+2:delete":
        "every entry's pattern is set to None by remember() before any read (the only place "
        "entries are made)",
    "cosyvoice_otel/masking.py:build_pattern+8:delete":
        "no registered text is blank (remember() drops them), so a text always has a form and "
        "the no-form branch is never taken",
    "cosyvoice_otel/masking.py:declared_query_names+2:delete":
        "route None is never declared (routes come from APIRoute.path, a str): the lookup that "
        "follows answers frozenset() too",
    "cosyvoice_otel/sdk/redaction.py:_number+5:delete":
        "unreachable: _number is called only for an instance of bool, int or float, which its "
        "loop returns",
    "cosyvoice_otel/tools/doctor.py:find_method+20:delete":
        "the function falls off its end: None either way",
    "cosyvoice_otel/tools/doctor.py:clock_offset+13:delete":
        "the body is never used: the Date header is parsed with the status line, before any "
        "of the body; reading the body only makes the interval the second's crossing is "
        "placed in longer",
    "cosyvoice_otel/tools/zipkin_server.py:find_jar+8:delete":
        "the function falls off its end: None either way",
    "cosyvoice_otel/schema.py:required_zeros+10:delete":
        "a memo: without it the same zeros are computed again from the same tables on the "
        "next call (the tables are constants)",
    "cosyvoice_otel/sdk/zipkin_json.py:_shared_tags+10:delete":
        "a memo per (resource, scope): without it the same tags are computed again from the "
        "same resource and scope",
    "cosyvoice_otel/tools/zipkin_server.py:stop+6:delete":
        "a pid that is gone (kill: no such process): the wait loop that follows finds it gone "
        "at its first look (waitpid: not our child; kill(pid, 0) fails) and returns",
    "cosyvoice_otel/sdk/redaction.py:_as_bytes_text+9:delete":
        "the function falls off its end: None either way",
    "cosyvoice_otel/sdk/meter.py:build_reader+11:delete":
        "the function falls off its end: None either way",
    "cosyvoice_otel/sdk/spool.py:pid_alive+6:delete":
        "the except block falls through to the function's own return True",
    "cosyvoice_otel/sdk/spool.py:_rename+8:delete":
        "renaming a file onto its own name is a no-op that succeeds (POSIX rename), and the "
        "name returned after it is that same path",
    "cosyvoice_otel/tools/zipkin_server.py:start+16:delete":
        "unreachable: the loop's last attempt returns or raises ZipkinServerError",
    "cosyvoice_otel/instrumentation/api.py:_pop+5:delete":
        "_pop's only caller, __exit__, returns before it when nothing is open; and with no "
        "entries the lookups that follow find nothing and return None too",
    "cosyvoice_otel/sdk/spool.py:claim_oldest+6:delete":
        "the function falls off its end: None either way",
    "cosyvoice_otel/instrumentation/api.py:__exit__+2:delete":
        "with nothing open, _pop() finds no entries and returns None: the same return",
    "cosyvoice_otel/instrumentation/api.py:_pop+11:delete":
        "with no entry chosen, entries.remove(None) raises ValueError, whose handler returns "
        "None too",
    "cosyvoice_otel/instrumentation/gpu_timing.py:torch_cuda+5:delete":
        "without torch, None.cuda raises AttributeError inside the try, whose handler returns "
        "None",
    "cosyvoice_otel/launcher/cli.py:_settings_options+5:swap":
        "click reads an option's declarations in any order (the one without dashes is the "
        "parameter's name)",
    "cosyvoice_otel/launcher/launcher.py:_probe+15:delete":
        "stderr is line-buffered (Python 3.9+, a pipe or a file alike) and the warning ends "
        "with a newline: it is written before the flush",
    "cosyvoice_otel/sdk/lifecycle.py:start+9:delete":
        "the SDK's Span.start returns None: the wrapper returns None either way",
    "cosyvoice_otel/sdk/export_base.py:__init__+4:delete":
        "note() sets _since on its first line, before any line reads it (the and short-"
        "circuits while the kind differs, and no kind is None)",
    "cosyvoice_otel/sdk/redaction.py:_attributes+16:swap":
        "!= is symmetric for every value that reaches it (a primitive, a tuple, a string); a "
        "comparison that raises raises either way round",
    "cosyvoice_otel/sdk/zipkin_json.py:__init__+2:delete":
        "encode() empties the per-batch table before _shared_tags first reads it",
    "cosyvoice_otel/settings.py:_otel_sampling_rate+14:delete":
        "the function falls off its end: None either way",
    "cosyvoice_otel/tools/report.py:p_value+3:swap":
        "the two-sided rank test is symmetric: |U - n1*n2/2| and the variance are the same "
        "with the samples swapped",
    "cosyvoice_otel/tools/report.py:_not_finite+4:delete":
        "its callers test truth only: None and False read the same",
    "cosyvoice_otel/launcher/cli.py:report+-1:swap":
        "click reads an option's declarations in any order (the one without dashes is the "
        "parameter's name)",
    "cosyvoice_otel/sdk/spool.py:_listing+17:delete":
        "when the listing fails, nothing was found yet: the sorted empty list is returned",
    "cosyvoice_otel/tools/zipkin.py:wait_for_trace+5:delete":
        "the loop assigns spans (read, or [] on an error) before any return reads it",
    "cosyvoice_otel/instrumentation/audio_figures.py:figures+18:swap":
        "np.maximum is symmetric: the element-wise larger of the two either way round",
    "cosyvoice_otel/launcher/launcher.py:exec_traced+5:delete":
        "stderr is line-buffered (Python 3.9+) and what the launcher writes there (click.echo, "
        "which flushes itself) ends with a newline: nothing is left to flush before the exec",
    "cosyvoice_otel/instrumentation/gpu_timing.py:start+18:delete":
        "the last line of the function's except block: it falls off its end, None either way",
    "cosyvoice_otel/launcher/cli.py:report+-28:swap":
        "click reads an option's declarations in any order (the one without dashes is the "
        "parameter's name)",
    "cosyvoice_otel/sdk/propagation.py:extract+5:delete":
        "every path that reads deferred assigns it first (the single header's and the multi "
        "headers' branches both do)",
    "cosyvoice_otel/sdk/prometheus.py:__init__+2:delete":
        "_scrape sets _latest to None before it collects and reads it; nothing else reads it",
    "cosyvoice_otel/sdk/spool.py:__init__+5:delete":
        "last_failure is read only after put() returned False, and each of put's False paths "
        "sets it first",
}


class Mutant(NamedTuple):
    module: str
    func: str  # the function it is in, and the line's offset there: "remember+4"
    line: int  # 1-based first line
    end: int  # last line
    kind: str  # delete | swap
    new: list[str]  # the replacement lines
    shown: str  # what changed, one line

    @property
    def key(self) -> str:
        """Stable while the function does not change above the mutated line (an EQUIVALENT
        row outlives edits elsewhere in the module)."""
        return f"{self.module}:{self.func}:{self.kind}"


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(
        node.value.value, str)


def mutants(module: str) -> list[Mutant]:
    source = (ROOT / module).read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    found: list[Mutant] = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            body = getattr(node, "body", None)
            if not isinstance(body, list):
                continue
            for stmt in body:
                # a forgotten line: assignments, calls, returns, raises, augmented updates
                # (a bare annotation, ``x: int``, does nothing: not a statement to forget)
                if (isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return,
                                      ast.Raise, ast.Expr)) and not _is_docstring(stmt)
                        and not (isinstance(stmt, ast.AnnAssign) and stmt.value is None)
                        and stmt.end_lineno is not None):
                    indent = lines[stmt.lineno - 1][: stmt.col_offset]
                    first = lines[stmt.lineno - 1].strip()
                    if not lines[stmt.lineno - 1][stmt.col_offset:].startswith(first[:1]):
                        continue
                    if stmt.lineno == stmt.end_lineno or all(
                            lines[i].startswith(indent) for i in range(stmt.lineno,
                                                                       stmt.end_lineno)):
                        found.append(Mutant(module, f"{func.name}+{stmt.lineno - func.lineno}",
                                            stmt.lineno, stmt.end_lineno, "delete",
                                            [indent + "pass"], f"- {first[:90]}"))
        in_fstring = {id(inner) for node in ast.walk(func) if isinstance(node, ast.JoinedStr)
                      for inner in ast.walk(node)}  # their positions are not reliable (3.11)
        for call in ast.walk(func):  # a field swap: a call's first two positional arguments
            if (isinstance(call, ast.Call) and len(call.args) >= 2 and id(call) not in in_fstring
                    and not (isinstance(call.func, ast.Name) and call.func.id in SYMMETRIC)
                    and call.lineno == call.end_lineno
                    and all(a.lineno == call.lineno for a in call.args[:2])
                    and not any(isinstance(a, ast.Starred) for a in call.args[:2])):
                a, b = call.args[:2]
                text = lines[call.lineno - 1]
                first = text[a.col_offset:a.end_col_offset]
                second = text[b.col_offset:b.end_col_offset]
                if first == second:
                    continue
                swapped = (text[:a.col_offset] + second + text[a.end_col_offset:b.col_offset]
                           + first + text[b.end_col_offset:])
                found.append(Mutant(module, f"{func.name}+{call.lineno - func.lineno}",
                                    call.lineno, call.lineno, "swap", [swapped],
                                    f"swap {first} <-> {second}"))
    unique = {f"{m.line}:{m.kind}:{m.shown}": m for m in found}
    return sorted(unique.values(), key=lambda m: (m.line, m.kind, m.shown))


def _apply(mutant: Mutant | None) -> Path:
    work = copy_tree("stmt-mutant-")
    if mutant is not None:
        target = work / mutant.module
        lines = target.read_text(encoding="utf-8").splitlines()
        lines[mutant.line - 1: mutant.end] = mutant.new
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return work


def _pytest(work: Path, tests: list[str], *options: str,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:randomly",
         "-p", "no:cacheprovider", *options, *tests],
        cwd=work, env={**os.environ, "PYTHONPATH": str(work), "CI": "true"},
        capture_output=True, text=True, timeout=timeout)


def time_bound(cmap: CoverageMap, tests: list[str]) -> float:
    """Seconds a mutant's tests may take before it counts as a hang (a deleted ``break`` or
    loop step: caught, as a test run would never end): four times what they took when mapped
    (under coverage, itself slower), plus a minute for the start, at least two minutes."""
    return max(120.0, 4 * sum(cmap.duration(t) for t in tests) + 60)


def selection(cmap: CoverageMap, mutant: Mutant, e2e_tests: int = E2E_PER_MUTANT) -> list[str]:
    """The tests that run the mutated lines: every unit test, the quickest e2e ones."""
    found = cmap.tests_for(mutant.module, mutant.line, mutant.end)
    unit = sorted(t for t in found if t.startswith("tests/unit/"))
    e2e = sorted((t for t in found if not t.startswith("tests/unit/")),
                 key=lambda t: (cmap.duration(t), t))
    return unit + e2e[:e2e_tests]


def failing_unmutated(tests: set[str]) -> set[str]:
    """The selected tests that fail on the unmutated copy: never credited with a catch. A
    test the map names but the tree no longer has (renamed since the map) counts as one: pytest
    would stop every run that names it before running anything."""
    if not tests:
        return set()
    work = _apply(None)
    gone: set[str] = set()
    try:
        while True:  # pytest names the first id it cannot find, then stops
            listed = _pytest(work, sorted(tests - gone), "--collect-only", "-n", "0")
            missing = {line.split("not found: ", 1)[1].strip().removeprefix(f"{work}/")
                       for line in (listed.stdout + listed.stderr).splitlines()
                       if line.startswith("ERROR: not found: ")}
            if not missing - gone:
                break
            gone |= missing
        run = _pytest(work, sorted(tests - gone), "-n", "4", "--dist", "loadgroup", "-rf")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return gone | {line.split()[1] for line in run.stdout.splitlines()
                   if line.startswith(("FAILED ", "ERROR ")) and len(line.split()) > 1}


def caught(mutant: Mutant, tests: list[str], timeout: float = 900) -> str:
    """``caught`` (a test failed), ``timeout`` (they never finished: caught too), ``missed``."""
    if not tests:
        return "uncovered"
    work = _apply(mutant)
    try:
        run = _pytest(work, tests, "-x", "-n", "0", timeout=timeout)
        return "missed" if run.returncode == 0 else "caught"
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    per_module, sample, seed, jobs, record, chosen_modules, only = 0, 160, 31, 2, False, [], []
    e2e_tests = E2E_PER_MUTANT
    args = iter(argv)
    for arg in args:
        if arg == "--per-module":
            per_module = int(next(args))
        elif arg == "--sample":
            sample = int(next(args))
        elif arg == "--seed":
            seed = int(next(args))
        elif arg == "--jobs":
            jobs = int(next(args))
        elif arg == "--only":  # a mutant's key (repeatable): these instead of a sample
            only.append(next(args))
        elif arg == "--e2e":  # e2e tests per mutant (0: a quick look at the unit tests alone)
            e2e_tests = int(next(args))
        elif arg == "--record":
            record = True
        else:
            chosen_modules.append(arg)
    rng = random.Random(seed)
    pools = {module: mutants(module) for module in chosen_modules or modules()}
    everything = sum(len(pool) for pool in pools.values())
    chosen: list[Mutant] = []
    for pool in pools.values():
        # a share of the package's mutants as large as the module's share of them (at least
        # one from each): the score estimates the whole package, not an average of modules
        wanted = per_module or max(1, round(sample * len(pool) / max(everything, 1)))
        chosen.extend(rng.sample(pool, min(wanted, len(pool))))
    if only:  # these mutants, sampled or not (a survivor re-run after the tests it asked for)
        chosen = [m for pool in pools.values() for m in pool if m.key in only]
    cmap = CoverageMap()
    tests = [selection(cmap, m, e2e_tests) for m in chosen]
    broken = failing_unmutated({t for ts in tests for t in ts})
    for name in sorted(broken):
        print(f"not counted (fails unmutated): {name}", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(
            lambda m, ts: caught(m, kept := [t for t in ts if t not in broken],
                                 time_bound(cmap, kept)), chosen, tests))
    lines, hits, excused = [], 0, 0
    for mutant, result in zip(chosen, results, strict=True):
        ok = result in ("caught", "timeout")
        reason = EQUIVALENT.get(mutant.key)
        hits += ok
        excused += (not ok) and reason is not None
        state = result if ok else ("equiv." if reason else f"SURVIVED ({result})")
        line = f"{state:8s} {mutant.key}  {mutant.shown}" + (f"  ({reason})" if reason and not ok
                                                             else "")
        lines.append(line)
        print(line, flush=True)
    judged = len(chosen) - excused
    score = hits / judged if judged else 1.0
    summary = (f"{hits} caught of {len(chosen)} ({excused} equivalent, said why): {score:.1%}")
    print(summary)
    if record:
        if e2e_tests != E2E_PER_MUTANT:
            raise SystemExit("--record measures with the default e2e selection")
        command = " ".join(["statement_mutants", *argv])
        RECORD.write_text(f"# {datetime.date.today()}  {command}  (seed {seed})\n{summary}\n"
                          + "\n".join(lines) + "\n", encoding="utf-8")
    return 0 if score >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
