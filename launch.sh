#!/bin/sh
# launch.sh -- cosyvoice-traced for containers and plain shells.
#
#   ./launch.sh webui.py --port 8000            # like: python webui.py --port 8000, traced
#   ./launch.sh -m package.module ARGS...       # like: python -m package.module ARGS...
#   ./launch.sh uvicorn app:app --port 8000     # any executable on PATH
#
# Configuration is environment only: the same COSYVOICE_TRACED_* and OTEL_* variables as
# `cosyvoice-traced run`, with the same precedence (COSYVOICE_TRACED_* > OTEL_* > default).
# The settings and the program are resolved by `python -m cosyvoice_otel env -- PROGRAM...`
# (one implementation for both launchers), then this script execs opentelemetry-instrument, so
# the app keeps this pid, its signals, stdio and exit status. COSYVOICE_TRACED_TRACING=false runs the program untouched.
# COSYVOICE_TRACED_PYTHON picks the interpreter (default: python3 on PATH).
set -eu

prog=$(basename "$0")
die() { echo "$prog: error: $*" >&2; exit 2; }

PY=${COSYVOICE_TRACED_PYTHON:-$(command -v python3 || command -v python || true)}
[ -n "$PY" ] && [ -x "$PY" ] || die "no python3 found; set COSYVOICE_TRACED_PYTHON"
[ $# -gt 0 ] || die "missing program: give the command to run, e.g. $prog webui.py --port 8000"
[ "$1" = "--" ] && shift
[ $# -gt 0 ] || die "missing program: give the command to run, e.g. $prog webui.py --port 8000"

# Python resolves the settings AND the program, exactly as `cosyvoice-traced run` does: it
# prints `export K=V` lines, `set -- PROGRAM...` and `instrument=...` (one implementation).
settings=$("$PY" -m cosyvoice_otel env --format shell --check-endpoint -- "$@") || exit $?
eval "$settings"
case "$settings" in
  "# tracing disabled"*) exec "$@" ;;
esac
exec "$instrument" "$@"
