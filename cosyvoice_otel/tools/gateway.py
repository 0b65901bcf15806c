"""Traefik v3 in front of CosyVoice: an API gateway with authentication and a rate limit whose
steps are spans of the request's own trace (``cosyvoice-traced gateway-config``).

The seed's scene is mobile app -> gateway -> auth -> rate limit -> CosyVoice. nginx (the
``nginx-config`` recipe) only injects B3 headers and reports no span, so a request refused at
the edge leaves no trace. Traefik reports OTLP spans (to a Collector, which sends them on to
Zipkin) and passes the trace context to the auth service and the app. The files written here:

* ``traefik.yaml``, the static configuration: one entry point, the file provider, tracing
  over OTLP/HTTP with ``traceVerbosity: detailed`` (a span per router and middleware, so a
  trace says WHICH step answered: the auth check, the rate limit, the proxied call, not only
  "post"), query values redacted (Traefik's default; no ``safeQueryParams``) and no captured
  headers (a credential is a header);
* ``dynamic.yaml``, what the file provider loads: the router, the ``forwardAuth`` and
  ``rateLimit`` middlewares (auth first: an unauthenticated flood never reaches the app; the
  limit counts per client address), the app's servers.

Traefik reads its propagators from ``OTEL_PROPAGATORS`` in its own environment (not the
file): start it with ``OTEL_PROPAGATORS=tracecontext,b3multi,b3``. Each name is one header
format, read and written: seen here, without ``b3`` a client's single ``b3`` header was not
read, Traefik started a trace of its own and passed the client's header on untouched, so the
app joined the client's trace beside the gateway's, not under it.
"""

from __future__ import annotations

import re
from pathlib import Path

from cosyvoice_otel.tools.nginx import check_host_port

PROPAGATORS = "tracecontext,b3multi,b3"
_RATE = re.compile(r"^(\d{1,6})(?:/(\d{1,6}))?$")


def parse_rate(text: str) -> tuple[int, int]:
    """``AVG[/BURST]``: requests per second on average, and the burst allowed above it (the
    average when not given)."""
    match = _RATE.match(text.strip())
    if not match or int(match.group(1)) == 0 or (match.group(2) and int(match.group(2)) == 0):
        raise ValueError(f"--rate must be AVG[/BURST], positive whole requests per second, "
                         f"got {text!r}")
    average = int(match.group(1))
    return average, int(match.group(2) or average)


def check_url(value: str, what: str) -> str:
    from cosyvoice_otel.settings import parse_http_url

    try:
        return parse_http_url(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _quoted(value: str) -> str:
    """A YAML double-quoted scalar (URLs and addresses are checked before; quotes anyway)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(upstreams: list[str], auth: str, rate: str, otlp_endpoint: str, out_dir: Path,
           listen: str = "0.0.0.0:8080", service_name: str = "gateway") -> dict[str, str]:
    """File name -> text: ``traefik.yaml`` (static) and ``dynamic.yaml`` (its file provider's),
    the latter named by absolute path inside the former."""
    if not upstreams:
        raise ValueError("--upstream is required")
    servers = [check_host_port(item, "--upstream") for item in upstreams]
    listen = check_host_port(listen, "--listen")
    auth = check_url(auth, "--auth")
    otlp_endpoint = check_url(otlp_endpoint, "--otlp-endpoint")
    average, burst = parse_rate(rate)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", service_name):
        raise ValueError(f"--service-name must be letters, digits, '.', '_' or '-', "
                         f"got {service_name!r}")
    dynamic = (out_dir / "dynamic.yaml").resolve()
    static = f"""\
# cosyvoice-otel: Traefik v3 in front of CosyVoice ({", ".join(servers)}).
# Start:  OTEL_PROPAGATORS={PROPAGATORS} traefik --configFile={(out_dir / "traefik.yaml").resolve()}
global:
  # no calls home from the gateway: no version check, no usage report
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  web:
    address: {_quoted(listen)}
    # hardening Traefik asks to be set, said explicitly: ambiguous encoded characters in a
    # path are refused (the app's routes have none), and a header whose name aliases another
    # (X_Auth_User for X-Auth-User) is dropped, so no client can spoof a header Traefik sets
    http:
      aliasHeadersStrategy: delete
      encodedCharacters:
        allowEncodedSlash: false
        allowEncodedBackSlash: false
        allowEncodedNullCharacter: false
        allowEncodedSemicolon: false
        allowEncodedPercent: false
        allowEncodedQuestionMark: false
        allowEncodedHash: false
    observability:
      tracing: true
      # a span per router and middleware: the trace names the step that answered
      traceVerbosity: detailed
providers:
  file:
    filename: {_quoted(str(dynamic))}
    watch: false
tracing:
  serviceName: {_quoted(service_name)}
  sampleRate: 1.0
  # query values stay redacted (Traefik's default: no safeQueryParams) and no header is
  # captured: a synthesis GET carries its text in the query, a credential in a header
  otlp:
    http:
      endpoint: {_quoted(otlp_endpoint)}
log:
  level: WARN
"""
    server_lines = "".join(f"          - url: {_quoted('http://' + item)}\n" for item in servers)
    dynamic_text = f"""\
# cosyvoice-otel: the router, authentication, rate limit and the app's servers.
http:
  routers:
    cosyvoice:
      rule: "PathPrefix(`/`)"
      entryPoints: [web]
      # authentication first: a request without a valid credential never counts against,
      # or reaches, the app
      middlewares: [cosyvoice-auth, cosyvoice-rate-limit]
      service: cosyvoice
      observability:
        tracing: true
        traceVerbosity: detailed
  middlewares:
    cosyvoice-auth:
      forwardAuth:
        address: {_quoted(auth)}
        # the client's X-Forwarded-* are not trusted: the auth service sees what Traefik saw
        trustForwardHeader: false
        # the auth service answers a status and a few bytes; never buffer more
        maxResponseBodySize: 65536
    cosyvoice-rate-limit:
      rateLimit:
        average: {average}
        burst: {burst}
        period: 1s
  services:
    cosyvoice:
      loadBalancer:
        servers:
{server_lines}"""
    return {"traefik.yaml": static, "dynamic.yaml": dynamic_text}


def write(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write the files into ``out_dir`` (made if missing), each replaced whole (a temporary
    file renamed over it: Traefik never reads half a file; a symlink there is replaced, not
    followed)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            raise ValueError(f"--out: {target} is a folder")
        temporary = out_dir / f".{name}.tmp"
        temporary.unlink(missing_ok=True)
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(target)
        written.append(target)
    return written
