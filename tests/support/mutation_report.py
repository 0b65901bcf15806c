"""Mutation score per module, from mutmut's last run, and the survivors nobody explained.

    .venv/bin/mutmut run            # the modules and tests are listed in pyproject.toml
    .venv/bin/python tests/support/mutation_report.py [--target 85]

Prints killed / total per module (a mutant no test covers counts as not killed) and exits 1
when a module is under the target or a surviving mutant has no line in
``tests/support/mutation-survivors.txt`` (``NAME: why it is equivalent or accepted``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPLAINED = Path(__file__).with_name("mutation-survivors.txt")
_MODULE = re.compile(r"^(?P<module>.+?)\.x[_ǁ]")


def results() -> dict[str, str]:
    out = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "results", "--all",
                          "true"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and _MODULE.match(name):
            found[name] = status
    return found


def explained() -> dict[str, str]:
    if not EXPLAINED.exists():
        return {}
    reasons = {}
    for line in EXPLAINED.read_text().splitlines():
        name, sep, why = line.partition(": ")
        if sep and not line.startswith("#"):
            reasons[name.strip()] = why.strip()
    return reasons


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=85.0)
    args = parser.parse_args()
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: list[str] = []
    for name, status in results().items():
        by_module[_MODULE.match(name)["module"]][status] += 1
        if status == "survived":
            survivors.append(name)
    reasons = explained()
    failed = False
    print(f"{'module':45s} {'killed':>7s} {'total':>6s} {'score':>7s}  other")
    for module, counts in sorted(by_module.items()):
        total = sum(counts.values())
        score = 100.0 * counts["killed"] / total if total else 0.0
        other = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "killed")
        flag = "" if score >= args.target else "  < target"
        failed |= score < args.target
        print(f"{module:45s} {counts['killed']:7d} {total:6d} {score:6.1f}%  {other}{flag}")
    unexplained = [name for name in survivors if name not in reasons]
    if unexplained:
        failed = True
        print(f"\n{len(unexplained)} surviving mutant(s) without a reason in {EXPLAINED.name}:")
        for name in unexplained:
            print(f"  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
