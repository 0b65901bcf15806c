"""Writes its argv as JSON to the file named by its last argument (a program for launch tests)."""

import json
import sys

if __name__ == "__main__":
    json.dump(sys.argv, open(sys.argv[-1], "w"))  # noqa: SIM115 - a one-shot test helper
