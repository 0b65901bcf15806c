"""Both kinds of mutation score: mutmut's per module, and the generated realistic bugs'.

    .venv/bin/mutmut run            # the modules and tests are listed in pyproject.toml
    .venv/bin/python tests/support/mutation_report.py [--target 85]

Two kinds, reported apart because they measure different things. **mutmut** changes an
operator or a constant in the modules listed in ``pyproject.toml``; the first table is its
last run. **Statement mutants** (``statement_mutants.py``: a statement deleted, two arguments
swapped, over the whole package with the end-to-end tests that run each line) are the bugs
that pass review; their last recorded run (``statement-mutants.txt``, written by ``--record``)
is shown after it, and it fails the report below its own target (95%).

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


RECORDED = Path(__file__).with_name("statement-mutants.txt")


def results() -> dict[str, str]:
    if not (ROOT / "mutants").is_dir():
        return {}  # mutmut has not run in this checkout (its results are not committed)
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
    if not by_module:
        print("(no mutmut results here: .venv/bin/mutmut run makes them)")
    failed |= statement_record()
    unexplained = [name for name in survivors if name not in reasons]
    if unexplained:
        failed = True
        print(f"\n{len(unexplained)} surviving mutant(s) without a reason in {EXPLAINED.name}:")
        for name in unexplained:
            print(f"  {name}")
    return 1 if failed else 0


def statement_record() -> bool:
    """Print the generated mutants' recorded run; True when it is under its target."""
    from tests.support.statement_mutants import TARGET

    print(f"\nstatement mutants ({RECORDED.name}):")
    if not RECORDED.exists():
        print("  no recorded run: python -m tests.support.statement_mutants --record")
        return True
    lines = RECORDED.read_text(encoding="utf-8").splitlines()
    for line in lines:
        if line.startswith(("#", "SURVIVED", "equiv.")) or " caught of " in line:
            print(f"  {line}")
    score = re.search(r"([0-9.]+)%$", next((x for x in lines if " caught of " in x), ""))
    under = score is None or float(score[1]) < 100 * TARGET
    if under:
        print(f"  under the target ({TARGET:.0%})")
    return under


if __name__ == "__main__":
    sys.exit(main())
