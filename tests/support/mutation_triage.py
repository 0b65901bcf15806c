"""Sort the surviving mutants of the last mutmut run by kind, and propose a reason for each.

    .venv/bin/python tests/support/mutation_triage.py [--write]

Reads each survivor's diff (in one process, through mutmut's own functions) and applies the
rules below, each a kind of mutant that no test can or should tell apart, with the reason
written next to it. A survivor no rule covers is listed "not yet analysed": a candidate for
a test. ``--write`` rewrites ``mutation-survivors.txt`` keeping every hand-written reason
(a line whose reason does not start with one of the rules' texts or "not yet analysed").
The rules are deliberately narrow: they read the changed line, never the module.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPLAINED = Path(__file__).with_name("mutation-survivors.txt")
UNANALYSED = "not yet analysed: a candidate for a new test"

LOG_CALL = re.compile(r"\b(logger|logging)\.(debug|info|warning|error|exception)\(|warnings\.warn\(")
TIMEOUT = re.compile(r"(timeout\w*|_ms|_s|deadline|interval\w*)\b.*=\s*[\d_.]+|time\.sleep\(|/ 100[01]\b")

RULES: list[tuple[str, str]] = [
    ("log", "accepted: the wording or arguments of a log line; that the line is written, once "
            "per streak, is tested, not its words"),
    ("note_error", "accepted: note_error's place label or exception only name the one-time "
                   "warning and the per-place counter; that the failure is contained is tested"),
    ("timeout", "equivalent: a timeout, deadline or polling interval moved by a unit; tests "
                "assert no wall-clock bound (TESTING.md)"),
    ("zip_strict", "equivalent: the zipped sequences have one length by construction; "
                   "strict= only guards that"),
    ("message", "accepted: the wording of an error message; the one-line error and its exit "
                "status are tested"),
]
REASONS = dict(RULES)


def kind(removed: str, added: str, context: list[str]) -> str | None:
    """The rule a one-line mutation falls under, or None."""
    statement = " ".join(context[-3:] + [removed])
    if "note_error(" in removed:
        return "note_error"
    if LOG_CALL.search(statement) and (_only_strings_or_args_changed(removed, added)
                                       or _continues_a_call(removed, context)):
        return "log"
    if "strict=" in removed and "zip(" in removed:
        return "zip_strict"
    if TIMEOUT.search(removed) and _numbers_only(removed, added):
        return "timeout"
    if re.search(r"raise \w*Error\(|ConfigError\(|UsageError\(", statement) and \
            _only_strings_or_args_changed(removed, added):
        return "message"
    return None


def _continues_a_call(removed: str, context: list[str]) -> bool:
    """The line is an argument line of a log call opened on a line above (no statement)."""
    opened = next((line for line in reversed(context[-3:]) if LOG_CALL.search(line)), None)
    return opened is not None and not re.match(r"\s*(\w+\s*=[^=]|if |return|for |while )",
                                               removed)


def _strip_strings(line: str) -> str:
    return re.sub(r"(f?)(\"[^\"]*\"|'[^']*')", '""', line)


def _only_strings_or_args_changed(removed: str, added: str) -> bool:
    if _strip_strings(removed) == _strip_strings(added):
        return True  # a string literal's text only
    # an argument dropped or set to None inside the same call
    return removed.split("(")[0] == added.split("(")[0] and "(" in removed


def _numbers_only(removed: str, added: str) -> bool:
    number = r"\d[\d_.]*"
    return re.sub(number, "N", removed.replace("<=", "<")) == re.sub(
        number, "N", added.replace("<=", "<"))


def survivors() -> dict[str, str]:
    """Name -> diff, for every surviving mutant (mutmut's own reading of its results)."""
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant, walk_mutatable_files

    found = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            if code == 0:  # the tests passed with the mutant in: it survived
                found[name] = get_diff_for_mutant(name, path=path)
    return found


def propose(diff: str) -> str:
    lines = diff.splitlines()
    changed = [(i, line) for i, line in enumerate(lines)
               if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
    removed = [line[1:] for _, line in changed if line.startswith("-")]
    added = [line[1:] for _, line in changed if line.startswith("+")]
    if len(removed) != 1 or len(added) != 1:
        return UNANALYSED
    first = changed[0][0]
    context = [line[1:] for line in lines[:first] if line.startswith(" ")]
    rule = kind(removed[0], added[0], context)
    return REASONS[rule] if rule else UNANALYSED


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    found = survivors()
    kept: dict[str, str] = {}
    header: list[str] = []
    if EXPLAINED.exists():
        for line in EXPLAINED.read_text().splitlines():
            if line.startswith("#"):
                header.append(line)
                continue
            name, sep, why = line.partition(": ")
            automatic = why.startswith(tuple(REASONS.values())) or why.startswith(UNANALYSED)
            if sep and not automatic:
                kept[name.strip()] = why.strip()
    reasons = {name: kept.get(name) or propose(diff) for name, diff in sorted(found.items())}
    counts = Counter("hand-written" if name in kept else
                     next((k for k, v in REASONS.items() if v == why), "not yet analysed")
                     for name, why in reasons.items())
    for what, count in counts.most_common():
        print(f"{count:5d}  {what}")
    if args.write:
        EXPLAINED.write_text("\n".join(header + [f"{n}: {w}" for n, w in reasons.items()]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
