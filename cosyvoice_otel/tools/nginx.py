"""nginx configuration that injects VALID B3 headers in front of a service (the seed's scheme 2).

The seed's snippet put nginx's 32-hex ``$request_id`` in ``X-B3-SpanId``, which must be 16 hex,
so every propagator ignored it. This one:

* keeps the trace id of a valid incoming ``X-B3-TraceId``, ``b3`` (single) or W3C
  ``traceparent`` header, in that order, and otherwise takes ``$request_id`` (32 hex: a valid
  128-bit trace id); garbage is replaced, never forwarded;
* makes the span id from the first 16 hex of ``$request_id``;
* always sends an explicit ``X-B3-Sampled`` (the incoming decision when there is one, else 1),
  because a missing flag makes the Python B3 propagator drop the trace;
* removes the incoming single/W3C headers, so the app sees one consistent context;
* logs the trace id and span id in the access log (format ``cosyvoice_b3``), with the request's
  method and PATH: never its query string (a GET route's query holds the request's text);
* with several replicas, keeps a Gradio session on ONE replica: its upload, its queue join and
  the data stream that follows (``/gradio_api/...``) live in that replica's memory and files,
  so those requests are hashed by client address (consistent hashing: a replica leaving moves
  only its own clients); every other route (a stateless FastAPI server's) is balanced round
  robin.

nginx itself reports no span: the app's server span has a parent id Zipkin never receives.
"""

from __future__ import annotations

import re

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


def check_host_port(value: str, what: str) -> str:
    match = _HOST_PORT.match(value.strip())
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"{what} must be HOST:PORT, got {value!r}")
    return value.strip()


def render(upstream: str | list[str], listen: str = "0.0.0.0:8080",
           access_log: str = "/var/log/nginx/cosyvoice-access.log") -> str:
    """The ``log_format``, ``map`` and ``server`` blocks, to include inside ``http { }``.
    Several upstreams (replicas of the app) become one ``upstream`` block that nginx balances
    over (round robin); each replica traces with its own ``service.instance.id``."""
    upstreams = [upstream] if isinstance(upstream, str) else list(upstream)
    if not upstreams:
        raise ValueError("--upstream is required")
    upstreams = [check_host_port(item, "--upstream") for item in upstreams]
    listen = check_host_port(listen, "--listen")
    target, pool, sessions = upstreams[0], "", ""
    if len(upstreams) > 1:
        servers = "".join(f"    server {item};\n" for item in upstreams)
        target = "cosyvoice_replicas"
        pool = (f"# the replicas: round robin for stateless routes\nupstream {target} {{\n"
                f"{servers}}}\n\n"
                "# a Gradio session (upload, queue join, its data stream, /call) stays on one\n"
                "# replica: hashed by client address (behind another proxy, set its real_ip)\n"
                f"upstream cosyvoice_sessions {{\n    hash $remote_addr consistent;\n{servers}}}"
                "\n\n")
        sessions = _location("/gradio_api/", "cosyvoice_sessions") + "\n"
    return f"""\
# cosyvoice-otel: valid B3 injection for {", ".join(upstreams)}. Include inside http {{ }}.
# The access log has the method and the path, never the query string (request text).
log_format cosyvoice_b3 '$remote_addr [$time_local] "$request_method $uri $server_protocol" '
                        '$status $body_bytes_sent '
                        'trace_id=$cosyvoice_trace_id span_id=$cosyvoice_span_id '
                        'sampled=$cosyvoice_sampled rt=$request_time';

# trace id: a valid incoming X-B3-TraceId, else b3 (single), else traceparent, else $request_id
map "$http_x_b3_traceid|$http_b3|$http_traceparent" $cosyvoice_trace_id {{
    "~^(?<tid>[0-9a-f]{{32}}|[0-9a-f]{{16}})\\|" $tid;
    "~^[^|]*\\|(?<tid>[0-9a-f]{{32}}|[0-9a-f]{{16}})-[0-9a-f]{{16}}(-[01d](-[0-9a-f]{{16}})?)?\\|" $tid;
    "~^[^|]*\\|[^|]*\\|00-(?<tid>[0-9a-f]{{32}})-[0-9a-f]{{16}}-[0-9a-f]{{2}}$" $tid;
    default $request_id;
}}

# span id: 16 hex, derived from $request_id (32 hex); the seed used all 32, which is invalid
map $request_id $cosyvoice_span_id {{
    "~^(?<sid>[0-9a-f]{{16}})" $sid;
}}

# an explicit sampled flag: the incoming decision when there is one, else 1
map "$http_x_b3_sampled|$http_b3|$http_traceparent" $cosyvoice_sampled {{
    "~^(?<s>[01])\\|" $s;
    "~^[^|]*\\|[0-9a-f]{{16,32}}-[0-9a-f]{{16}}-(?<s>[01])" $s;
    "~^[^|]*\\|[0-9a-f]{{16,32}}-[0-9a-f]{{16}}-d" 1;
    "~^[^|]*\\|0$" 0;
    "~^[^|]*\\|[^|]*\\|00-[0-9a-f]{{32}}-[0-9a-f]{{16}}-[0-9a-f]([13579bdf])$" 1;
    "~^[^|]*\\|[^|]*\\|00-[0-9a-f]{{32}}-[0-9a-f]{{16}}-[0-9a-f]([02468ace])$" 0;
    default 1;
}}

map $http_upgrade $cosyvoice_connection {{
    default upgrade;
    ""      close;
}}

{pool}server {{
    listen {listen};
    access_log {access_log} cosyvoice_b3;
    # prompt audio is uploaded through here: nginx's 1 MB default refuses a 30 s WAV
    client_max_body_size 64m;

{sessions}{_location("/", target)}}}
"""


def _location(path: str, target: str) -> str:
    """One ``location`` block: the proxy settings and the B3 headers."""
    return f"""\
    location {path} {{
        proxy_pass http://{target};
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $cosyvoice_connection;

        proxy_set_header X-B3-TraceId $cosyvoice_trace_id;
        proxy_set_header X-B3-SpanId $cosyvoice_span_id;
        proxy_set_header X-B3-Sampled $cosyvoice_sampled;
        proxy_set_header X-B3-ParentSpanId "";
        proxy_set_header X-B3-Flags "";
        proxy_set_header b3 "";
        proxy_set_header traceparent "";
        proxy_set_header tracestate "";

        # Gradio's queue (SSE) and streamed audio must reach the client as they are produced
        proxy_buffering off;
        proxy_read_timeout 600s;
        add_header X-Trace-Id $cosyvoice_trace_id always;
    }}
"""
