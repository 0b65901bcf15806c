"""The mutation report under its documented name: ``python tests/mutation_report.py``.

It lives with the other test support code (``tests/support/mutation_report.py``); this file only
runs it, so the command named in the brief and in TESTING.md keeps working.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.mutation_report import main  # noqa: E402  (after the path is set)

if __name__ == "__main__":
    sys.exit(main())
