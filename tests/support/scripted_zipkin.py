"""A Zipkin stand-in for the exporters' tests: each POST is answered as a script says.

``answer(n)`` (``n`` counts the POSTs, from 1) returns ``(status, delay_s)``, or ``CLOSE``:
read the batch, keep it, and close the connection without a status line (Zipkin storing a
batch and going away before it answers). Every body is kept."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

from .loopback_server import LoopbackServer, QuietHandler

CLOSE = "close"


class ScriptedZipkin(LoopbackServer):
    def __init__(self, answer: Callable[[int], tuple[int, float] | str] = lambda n: (202, 0.0)
                 ) -> None:
        self.bodies: list[bytes] = []
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.bodies.append(body)
                reply = answer(len(stub.bodies))
                if reply == CLOSE:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, delay = reply
                time.sleep(delay)
                try:
                    self.reply(status)
                except OSError:
                    pass  # the exporter gave up waiting

        super().__init__(Handler, "/api/v2/spans")

    def spans(self) -> int:
        return sum(len(json.loads(body)) for body in self.bodies)
