"""A front for the real Zipkin that misbehaves on purpose: it forwards each POST to Zipkin,
then answers 413 for bodies over ``max_body`` (without forwarding), answers what ``refuse(body)``
says instead of forwarding (e.g. 500 for every body holding one trace id: Zipkin's storage
refusing it), or answers only after ``delay_s`` (after forwarding: Zipkin HAS the spans, the
client does not know). Binds port 0 and reports the port it got; stops itself when the test
ends."""

from __future__ import annotations

import time
import urllib.request

from .loopback_server import LoopbackServer, QuietHandler


class ZipkinFront(LoopbackServer):
    def __init__(self, zipkin_endpoint: str, max_body: int | None = None,
                 delay_s: float = 0.0, refuse=None) -> None:
        self.zipkin_endpoint = zipkin_endpoint
        self.max_body = max_body
        self.delay_s = delay_s
        self.refuse = refuse or (lambda body: None)
        self.bodies: list[bytes] = []  # every body received, refused or not
        self.statuses: list[int] = []
        front = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                front.bodies.append(body)
                refused = front.refuse(body)
                if front.max_body is not None and len(body) > front.max_body:
                    status = 413
                elif refused is not None:
                    status = refused
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
                    self.reply(status)
                except OSError:
                    pass  # the client gave up waiting

        super().__init__(Handler, "/api/v2/spans")
