"""A minimal Gradio HTTP client (standard library): the two queued paths, with trace headers.

Works against Gradio 5.x and 6.x without ``gradio_client`` (whose versions are tied to the
server's). Used by ``cosyvoice-traced demo``, ``verify`` and the tests.

* ``call(api, data)``: ``POST /gradio_api/call/{api}`` then the SSE ``GET .../{event_id}``;
* ``join(api, data)``: ``POST /gradio_api/queue/join`` then the SSE ``GET /queue/data``;
* ``upload(path)``: a file input value.

Every request carries the ``headers`` given (e.g. ``traceparent`` or ``b3``).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any


class GradioError(Exception):
    """The app answered with an error event, or not at all."""


class GradioRest:
    def __init__(self, base_url: str, headers: dict[str, str] | None = None,
                 timeout: float = 120.0, deadline: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout  # per read
        # for the whole call: Gradio's heartbeats keep an SSE stream alive (each read returns)
        # while a handler that never ends (a dead LLM thread) would make a per-read timeout
        # wait forever
        self.deadline = deadline

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str | None = None) -> Any:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.base_url + path, data=body, method=method,
                                     headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except OSError as exc:
            raise GradioError(f"{method} {path}: {exc}") from None

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        with self._request(method, path, body, "application/json" if body else None) as resp:
            return json.loads(resp.read())

    def fn_index(self, api_name: str) -> int:
        config = self._json("GET", "/config")
        for i, dep in enumerate(config.get("dependencies", [])):
            if dep.get("api_name") == api_name:
                return int(dep.get("id", i))
        raise GradioError(f"no event with api_name {api_name!r}")

    def upload(self, path: str | Path) -> dict[str, Any]:
        boundary = secrets.token_hex(16)
        data = Path(path).read_bytes()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                f"filename=\"{Path(path).name}\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
        body += data + f"\r\n--{boundary}--\r\n".encode()
        with self._request("POST", "/gradio_api/upload", body,
                           f"multipart/form-data; boundary={boundary}") as resp:
            server_path = json.loads(resp.read())[0]
        return {"path": server_path, "meta": {"_type": "gradio.FileData"},
                "orig_name": Path(path).name}

    def _lines(self, resp: Any, api_name: str) -> Any:
        """The response's lines, until the call's deadline (then GradioError)."""
        ends = None if self.deadline is None else time.monotonic() + self.deadline
        for raw in resp:
            if ends is not None and time.monotonic() > ends:
                resp.close()
                raise GradioError(f"{api_name}: no result within {self.deadline:g} s")
            yield raw

    def call(self, api_name: str, data: list[Any]) -> list[Any]:
        """The REST path: returns the final output list; raises GradioError on an error event."""
        event_id = self._json("POST", f"/gradio_api/call/{api_name}", {"data": data})["event_id"]
        last: list[Any] | None = None
        event = ""
        with self._request("GET", f"/gradio_api/call/{api_name}/{event_id}") as resp:
            for raw in self._lines(resp, api_name):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    payload = line[5:].strip()
                    if event == "error":
                        raise GradioError(f"{api_name}: app error {payload}")
                    if event in ("generating", "complete"):
                        last = json.loads(payload)
                    if event == "complete":
                        return last or []
        raise GradioError(f"{api_name}: the stream ended without a complete event")

    def join(self, api_name: str, data: list[Any]) -> list[Any]:
        """The queue path a browser or gradio_client uses."""
        session = uuid.uuid4().hex[:11]
        self._json("POST", "/gradio_api/queue/join",
                   {"data": data, "fn_index": self.fn_index(api_name), "session_hash": session,
                    "event_data": None, "trigger_id": None})
        with self._request("GET", f"/gradio_api/queue/data?session_hash={session}") as resp:
            for raw in self._lines(resp, api_name):
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    if not message.get("success", False):
                        raise GradioError(f"{api_name}: app error {message.get('output')}")
                    return message.get("output", {}).get("data", [])
        raise GradioError(f"{api_name}: the stream ended without process_completed")
