"""A front for the real Zipkin that misbehaves on purpose: it forwards each POST to Zipkin,
then answers 413 for bodies over ``max_body`` (without forwarding) or answers only after
``delay_s`` (after forwarding: Zipkin HAS the spans, the client does not know). Binds port 0
and reports the port it got; stops itself when the test ends."""

from __future__ import annotations

import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ZipkinFront:
    def __init__(self, zipkin_endpoint: str, max_body: int | None = None,
                 delay_s: float = 0.0) -> None:
        self.zipkin_endpoint = zipkin_endpoint
        self.max_body = max_body
        self.delay_s = delay_s
        self.bodies: list[bytes] = []  # every body received, refused or not
        self.statuses: list[int] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                front.bodies.append(body)
                if front.max_body is not None and len(body) > front.max_body:
                    status = 413
                else:
                    request = urllib.request.Request(front.zipkin_endpoint, data=body,
                                                     headers={"Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(request, timeout=10) as resp:
                            status = resp.status
                    except urllib.error.HTTPError as exc:
                        status = exc.code
                    time.sleep(front.delay_s)
                front.statuses.append(status)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/api/v2/spans"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ZipkinFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
