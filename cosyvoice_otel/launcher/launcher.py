"""Turn a command line into the traced process: resolve the program, build its env, ``exec``.

``cosyvoice-traced run`` ends in :func:`exec_traced`, which REPLACES the launcher process with
``opentelemetry-instrument PROGRAM ...`` (and that one with the program): the app keeps the pid,
signals, stdin/stdout/stderr and exit status it would have had when started by hand.

Program forms (the drop-in rules):

* ``python app.py ...`` / ``python3 ...`` -> the interpreter this package is installed in (it is
  the one that has the OpenTelemetry packages);
* ``app.py ...`` -> that same interpreter runs the file (the drop-in for ``python app.py``);
* ``-m package.module ...`` -> that interpreter with ``-m``;
* anything else -> an executable found on PATH (``uvicorn app:app``) or given by path.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence

from cosyvoice_otel.urls import shown

PYTHON_NAMES = frozenset({"python", "python3"})


class LaunchError(Exception):
    """The command line cannot be launched; the message is one line for the user."""


def resolve_program(argv: Sequence[str], python: str | None = None) -> list[str]:
    """Return the argv to run, with its first element an absolute path. Raises LaunchError."""
    python = python or sys.executable
    if not argv:
        raise LaunchError("missing program: give the command to run, e.g. "
                          "`cosyvoice-traced run -- python webui.py --port 8000`")
    first, rest = argv[0], list(argv[1:])
    if first in PYTHON_NAMES:
        return [python, *rest]
    if first == "-m":
        if not rest:
            raise LaunchError("missing module after -m")
        return [python, "-m", *rest]
    if first.endswith(".py"):
        if not os.path.isfile(first):
            raise LaunchError(f"program not found: no file {first!r}")
        return [python, first, *rest]
    found = shutil.which(first)
    if found is None:
        raise LaunchError(f"program not found: {first!r} is not a file nor on PATH")
    return [os.path.abspath(found), *rest]


def uvicorn_warning(argv: Sequence[str]) -> str | None:
    """One warning when uvicorn is asked for --reload or --workers N>1, or None."""
    names = [os.path.basename(a) for a in argv[:3]]
    if "uvicorn" not in names:
        return None
    args = list(argv)
    workers = None
    for i, arg in enumerate(args):
        if arg == "--workers" and i + 1 < len(args):
            workers = args[i + 1]
        elif arg.startswith("--workers="):
            workers = arg.split("=", 1)[1]
    reload = "--reload" in args
    multi = workers is not None and workers.isdigit() and int(workers) > 1
    if not (reload or multi):
        return None
    what = "--reload" if reload else f"--workers {workers}"
    return (f"cosyvoice-traced: warning: uvicorn {what} runs the app in child processes that "
            "auto-instrumentation does not reach; run one traced process per worker instead "
            "(e.g. gunicorn -k uvicorn.workers.UvicornWorker with a post_fork hook, or several "
            "`cosyvoice-traced run -- uvicorn ...` behind a balancer), and drop --reload.")


def find_instrument() -> str:
    """The opentelemetry-instrument script of this interpreter's environment."""
    beside = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    if os.path.isfile(beside):
        return beside
    found = shutil.which("opentelemetry-instrument")
    if found is None:
        raise LaunchError("opentelemetry-instrument not found: "
                          "pip install opentelemetry-instrumentation in this environment")
    return found


def check_endpoint_in_background(url: str, timeout: float = 1.0) -> None:
    """Warn once on stderr if ``url`` does not answer, without delaying the launch at all.

    A detached grandchild does the check (double fork), so the exec happens at once and the
    app never waits for, nor has to reap, the checker.
    """
    if not hasattr(os, "fork"):
        return
    try:
        pid = os.fork()
    except OSError:
        return
    if pid:
        os.waitpid(pid, 0)  # the child exits immediately after forking the grandchild
        return
    try:
        if os.fork():
            os._exit(0)
        os.dup2(2, 1)  # never hold a pipe on stdout (`$(cosyvoice-traced env ...)` would wait)
        _probe(url, timeout)
    finally:
        os._exit(0)


def _probe(url: str, timeout: float) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn_cls = (http.client.HTTPSConnection if parts.scheme == "https"
                else http.client.HTTPConnection)
    try:
        conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
        conn.request("GET", parts.path or "/")
        conn.getresponse().read(0)
    except Exception as exc:  # noqa: BLE001 - any answer at all, even 405, means it is there
        sys.stderr.write(f"cosyvoice-traced: warning: trace endpoint {shown(url)} did not answer "
                         f"({exc.__class__.__name__}: {exc}); the app runs anyway and spans "
                         "may be lost\n")
        sys.stderr.flush()


def exec_traced(instrument: str, program: Sequence[str], child_env: Mapping[str, str]) -> None:
    """Replace this process with ``opentelemetry-instrument PROGRAM...``. Never returns."""
    env = dict(os.environ)
    env.update(child_env)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(instrument, [instrument, *program], env)


def exec_untouched(program: Sequence[str]) -> None:
    """The kill switch: run the program exactly as the user would have. Never returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program[0], list(program))
