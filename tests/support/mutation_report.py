"""Mutation score per module, from mutmut's last run, and the survivors nobody explained.

    .venv/bin/mutmut run            # the modules and tests are listed in pyproject.toml
    .venv/bin/python tests/support/mutation_report.py [--target 85]

Prints caught / run per module (killed or timed out; a mutant no test covers counts as not
caught; mutants the run did not reach are listed apart) and exits 1 when a module is under
the target, mutants were not run (unless ``--partial``), or a surviving mutant has no line in
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


# a mutant the tests did not let finish (a hang, a loop) is caught: the suite does not pass
CAUGHT = ("killed", "timeout")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=85.0)
    parser.add_argument("--partial", action="store_true",
                        help="a run limited to some mutants (mutmut run NAMES): score what ran, "
                             "list what did not, and do not fail for it")
    args = parser.parse_args()
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: list[str] = []
    for name, status in results().items():
        by_module[_MODULE.match(name)["module"]][status] += 1
        if status == "survived":
            survivors.append(name)
    reasons = explained()
    failed = False
    not_run = 0
    print(f"{'module':45s} {'caught':>7s} {'run':>6s} {'score':>7s}  other")
    for module, counts in sorted(by_module.items()):
        unrun = counts["not checked"]
        not_run += unrun
        total = sum(counts.values()) - unrun
        caught = sum(counts[k] for k in CAUGHT)
        score = 100.0 * caught / total if total else 0.0
        other = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "killed")
        flag = "" if score >= args.target else "  < target"
        failed |= score < args.target and total > 0
        print(f"{module:45s} {caught:7d} {total:6d} {score:6.1f}%  {other}{flag}")
    if not_run:
        print(f"\n{not_run} mutant(s) not run (a run cut short, or limited to some names)"
              + ("" if args.partial else ": run them, or say --partial"))
        failed |= not args.partial
    unexplained = [name for name in survivors if name not in reasons]
    if unexplained:
        failed = True
        print(f"\n{len(unexplained)} surviving mutant(s) without a reason in {EXPLAINED.name}:")
        for name in unexplained:
            print(f"  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
