"""Generated realistic bugs: a statement deleted, a call's two arguments swapped (issue 31).

mutmut (TESTING.md) changes operators and constants. This script makes the other kind, the
bugs that pass review: for every function of the modules below it lists each statement that
can be deleted (replaced by ``pass``: a forgotten line) and each call whose first two
positional arguments can be swapped (a field swap); it draws a seeded sample, applies ONE
mutant to a copy of the tree (``realistic_mutants._tree``'s way), runs the module's tests
there, and counts the mutant caught when they fail.

    .venv/bin/python -m tests.support.statement_mutants [--per-module N] [--seed S] [MODULE ...]

Prints one line per mutant (``caught`` / ``SURVIVED`` with its diff line) and the score.
Survivors are listed in ``EQUIVALENT`` with the reason no input can tell them apart, or they
count as missed; the exit status is 1 below ``TARGET``.
"""

from __future__ import annotations

import ast
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from tests.support.realistic_mutants import copy_tree

ROOT = Path(__file__).resolve().parents[2]
TARGET = 0.95
U = "tests/unit/"

# module -> the fast tests that hold its promises
MODULE_TESTS: dict[str, tuple[str, ...]] = {
    "cosyvoice_otel/masking.py": (U + "test_masking.py", U + "test_redaction_rules.py",
                                  U + "test_trust_seams.py", U + "test_value_shapes.py"),
    "cosyvoice_otel/sdk/redaction.py": (U + "test_redaction.py", U + "test_redaction_rules.py",
                                        U + "test_trust_seams.py", U + "test_value_shapes.py"),
    "cosyvoice_otel/sdk/spool.py": (U + "test_spool.py", U + "test_zipkin_http.py",
                                    U + "test_trust_seams.py", U + "test_promises.py"),
    "cosyvoice_otel/sdk/zipkin_http.py": (U + "test_zipkin_http.py", U + "test_trust_seams.py",
                                          U + "test_promises.py"),
    "cosyvoice_otel/sdk/prometheus.py": (U + "test_metrics.py", U + "test_report_traps.py",
                                         U + "test_trust_seams.py"),
    "cosyvoice_otel/instrumentation/api.py": (U + "test_stage_api.py", U + "test_trust_seams.py",
                                              U + "test_promises.py", U + "test_value_shapes.py"),
    "cosyvoice_otel/tools/report.py": (U + "test_tools_trust.py", U + "test_report_traps.py",
                                       U + "test_promises.py"),
    "cosyvoice_otel/tools/verify.py": (U + "test_tools_trust.py", U + "test_promises.py"),
    "cosyvoice_otel/tools/doctor.py": (U + "test_report_traps.py", U + "test_metrics.py",
                                       U + "test_trust_seams.py"),
    "cosyvoice_otel/tools/nginx.py": ("tests/e2e/test_nginx.py::test_replicas_become_one_upstream_block",
                                      "tests/e2e/test_nginx.py::test_examples_config_is_the_generated_one"),
}

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
    "cosyvoice_otel/sdk/redaction.py:_as_bytes_text+9:delete":
        "the function falls off its end: None either way",
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
                if (isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return,
                                      ast.Raise, ast.Expr)) and not _is_docstring(stmt)
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


def _apply(mutant: Mutant) -> Path:
    work = copy_tree("stmt-mutant-")
    target = work / mutant.module
    lines = target.read_text(encoding="utf-8").splitlines()
    lines[mutant.line - 1: mutant.end] = mutant.new
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return work


def caught(mutant: Mutant) -> bool:
    work = _apply(mutant)
    try:
        run = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-x", "-n", "0",
             "-p", "no:randomly", "-p", "no:cacheprovider", *MODULE_TESTS[mutant.module]],
            cwd=work, env={**os.environ, "PYTHONPATH": str(work)}, capture_output=True,
            text=True, timeout=900)
        return run.returncode != 0  # failed, or could not even be collected: caught
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    per_module, seed, modules = 8, 31, []
    args = iter(argv)
    for arg in args:
        if arg == "--per-module":
            per_module = int(next(args))
        elif arg == "--seed":
            seed = int(next(args))
        else:
            modules.append(arg)
    rng = random.Random(seed)
    chosen: list[Mutant] = []
    for module in modules or list(MODULE_TESTS):
        pool = mutants(module)
        chosen.extend(rng.sample(pool, min(per_module, len(pool))))
    hits = excused = 0
    for mutant in chosen:
        ok = caught(mutant)
        reason = EQUIVALENT.get(mutant.key)
        hits += ok
        excused += (not ok) and reason is not None
        state = "caught" if ok else ("equiv." if reason else "SURVIVED")
        print(f"{state:8s} {mutant.key}  {mutant.shown}" + (f"  ({reason})" if reason and not ok
                                                             else ""), flush=True)
    judged = len(chosen) - excused
    score = hits / judged if judged else 1.0
    print(f"{hits} caught of {len(chosen)} ({excused} equivalent, said why): {score:.1%}")
    return 0 if score >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
