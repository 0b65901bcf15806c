"""Startup cost: `cosyvoice-traced run` vs bare `opentelemetry-instrument` vs plain python.

    .venv/bin/python benchmarks/startup.py [--runs 21]

The three commands run interleaved (round-robin) in one process, so machine noise hits all of
them alike; medians and ratios are printed. Both traced forms get the same OTEL_* environment
(the one `cosyvoice-traced env` renders, exporter none), so the difference is the launcher alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["COSYVOICE_TRACED_EXPORTER"] = "none"
    rendered = subprocess.run([BIN / "cosyvoice-traced", "env", "--format", "dotenv"], env=env,
                              capture_output=True, text=True, check=True).stdout
    otel_env = dict(env)
    otel_env.update(line.split("=", 1) for line in rendered.splitlines() if "=" in line)
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "opentelemetry-instrument python -c pass":
            ([str(BIN / "opentelemetry-instrument"), sys.executable, "-c", "pass"], otel_env),
        "cosyvoice-traced run -- python -c pass":
            ([str(BIN / "cosyvoice-traced"), "run", "--", "python", "-c", "pass"], env),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(2):  # warm the page cache
        for argv, e in commands.values():
            subprocess.run(argv, env=e, check=True)
    for _ in range(args.runs):
        for name, (argv, e) in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, env=e, check=True)
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(values) for name, values in times.items()}
    base = med["opentelemetry-instrument python -c pass"]
    print(f"runs per command: {args.runs} (interleaved)")
    for name, value in med.items():
        print(f"{name:45s} median {value * 1000:7.1f} ms   x{value / base:.3f} of bare "
              "opentelemetry-instrument")
    ratio = med["cosyvoice-traced run -- python -c pass"] / base
    print(f"launcher overhead over opentelemetry-instrument: {(ratio - 1) * 100:+.1f}% "
          "(target <= +10%)")


if __name__ == "__main__":
    main()
