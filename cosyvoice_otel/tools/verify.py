"""``cosyvoice-traced verify``: prove that a running, traced CosyVoice app joins Zipkin tracing.

It drives real synthesis requests against the app (Gradio through its queue API, the FastAPI
runtime server, or the gRPC runtime server), each with a trace id chosen here and sent as B3
single, B3 multi or W3C (HTTP headers, or gRPC metadata), plus ONE deliberately bad input;
then reads every trace back from Zipkin's API and checks it against the tracing schema:

* the client's trace id was kept (the trace exists under that id);
* tree shape and parent links, children inside their parents in time, required attributes
  (``checks.check_synthesis``);
* the bad input (a text over the 200-character limit) carries the error tag and an
  ``error.type`` reason;
* no request text (a unique canary in every text) appears anywhere Zipkin stored.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import secrets
import struct
import time
import urllib.error
import urllib.request
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.checks import check_synthesis
from cosyvoice_otel.tools.gradio_rest import GradioError, GradioRest
from cosyvoice_otel.tools.zipkin import ZipkinClient, ZipkinError

FORMATS = ("b3single", "b3multi", "w3c")
# A zero-shot prompt text every CosyVoice takes: CosyVoice3's LLM requires the instruction
# marker "<|endofprompt|>" in it (its thread asserts); v1/v2 read it as ordinary text.
PROMPT_TEXT = "You are a helpful assistant.<|endofprompt|>prompt words {canary}"
REQUEST_DEADLINE = 120.0  # seconds for one request, however its server keeps the stream alive
BAD_INPUT_REASON = "text_too_long"  # schema.ERROR_REASONS: what an over-long text is marked


@dataclass
class Check:
    name: str
    ok: bool
    reason: str = ""


@dataclass
class Sent:
    trace_id: str
    fmt: str
    mode: str
    stream: bool
    canary: str
    bad: bool = False
    error: str = ""


@dataclass
class Report:
    app_kind: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "app": self.app_kind,
                "checks": [{"name": c.name, "ok": c.ok, "reason": c.reason} for c in self.checks]}


def request_text(sent: Sent) -> str:
    text = f"Verify request {sent.canary}. 第二句。"
    return text + " This sentence pads the text past the limit." * 6 if sent.bad else text


def trace_headers(fmt: str, trace_id: str) -> dict[str, str]:
    span_id = secrets.token_hex(8)
    if fmt == "b3single":
        return {"b3": f"{trace_id}-{span_id}-1"}
    if fmt == "b3multi":
        return {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}
    return {"traceparent": f"00-{trace_id}-{span_id}-01"}


def wav_bytes(seconds: float = 1.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack(
            "<h", int(8000 * math.sin(i / 7) * ((i // 2000) % 2)))
            for i in range(int(rate * seconds))))
    return buf.getvalue()


# ------------------------------------------------------------------------------ the two apps

def detect(app_url: str) -> tuple[str, dict]:
    """('gradio' or 'fastapi', the document that told), by what the app serves."""
    for path, kind in (("/config", "gradio"), ("/openapi.json", "fastapi")):
        try:
            with urllib.request.urlopen(app_url.rstrip("/") + path, timeout=10) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError):
            continue
        if kind == "gradio" and "dependencies" in body:
            return kind, body
        if kind == "fastapi" and "/inference_sft" in body.get("paths", {}):
            return kind, body
    raise VerifyError(f"{app_url} is neither a Gradio app nor the CosyVoice FastAPI server")


class VerifyError(Exception):
    """verify cannot run at all (app or Zipkin unreachable); one line for the user."""


class GradioApp:
    """The CosyVoice webui shape: generate_audio(text, mode, speaker, prompt_text, upload,
    record, instruct, seed, stream, speed); modes by position (0 = sft, 1 = zero-shot)."""

    def __init__(self, url: str, config: dict) -> None:
        self.url = url
        dep = next((d for d in config["dependencies"] if d.get("api_name") == "generate_audio"),
                   None)
        if dep is None:
            raise VerifyError("the Gradio app has no generate_audio event (not a CosyVoice webui)")
        components = {c["id"]: c for c in config["components"]}
        inputs = [components[i].get("props", {}) for i in dep["inputs"]]

        def first_choices(props: dict) -> list:
            return [c[1] if isinstance(c, list) else c for c in props.get("choices", [])]

        self.modes = first_choices(inputs[1])
        # a speaker the app offers; CosyVoice3 ships none (its dropdown holds only "")
        self.speaker = next((s for s in first_choices(inputs[2]) if s), "")

    @property
    def has_speakers(self) -> bool:
        return bool(self.speaker)

    def send(self, sent: Sent, prompt: bytes | None, tmp: Callable[[bytes], str]) -> None:
        client = GradioRest(self.url, headers=trace_headers(sent.fmt, sent.trace_id),
                            deadline=REQUEST_DEADLINE)
        upload = client.upload(tmp(prompt)) if prompt is not None else None
        mode = self.modes[0 if sent.mode == "sft" else 1]
        prompt_text = PROMPT_TEXT.format(canary=sent.canary) if sent.mode != "sft" else ""
        data = [request_text(sent), mode, self.speaker, prompt_text, upload, None, "", 0,
                sent.stream, 1.0]
        client.join("generate_audio", data)


class FastApiApp:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def send(self, sent: Sent, prompt: bytes | None, tmp: Callable[[bytes], str]) -> None:
        boundary = uuid.uuid4().hex
        fields = {"tts_text": request_text(sent), "stream_mode": str(sent.stream).lower()}
        if sent.mode == "sft":
            fields["spk_id"] = "中文女"  # a pretrained speaker of the demo and upstream models
        else:
            fields["prompt_text"] = PROMPT_TEXT.format(canary=sent.canary)
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n"
                        f"{v}\r\n".encode() for k, v in fields.items())
        if prompt is not None:
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"prompt_wav\"; "
                     "filename=\"prompt.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
            body += prompt + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   **trace_headers(sent.fmt, sent.trace_id)}
        req = urllib.request.Request(f"{self.url}/inference_{sent.mode}", data=body,
                                     headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=REQUEST_DEADLINE) as resp:
            resp.read()


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2): tag, varint length, bytes."""
    out, length = bytearray([number << 3 | 2]), len(payload)
    while length > 0x7F:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out) + payload


def grpc_request(mode: str, text: str, prompt_pcm: bytes = b"", spk_id: str = "中文女") -> bytes:
    """A ``cosyvoice.Request`` (upstream's runtime proto) encoded by hand, so verify needs no
    generated stubs: sft_request = 1 {spk_id = 1, tts_text = 2}; zero_shot_request = 2
    {tts_text = 1, prompt_text = 2, prompt_audio = 3}."""
    if mode == "sft":
        return _field(1, _field(1, spk_id.encode()) + _field(2, text.encode()))
    return _field(2, _field(1, text.encode()) + _field(2, b"prompt words")
                  + _field(3, prompt_pcm))


class GrpcApp:
    """The CosyVoice gRPC runtime server: ``cosyvoice.CosyVoice/Inference``, server-streaming;
    the trace context goes in the call's metadata (gRPC's headers)."""

    METHOD = "/cosyvoice.CosyVoice/Inference"

    def __init__(self, target: str) -> None:
        try:
            import grpc
        except ImportError:
            raise VerifyError("verify --grpc needs grpcio (pip install grpcio)") from None
        self.grpc = grpc
        self.channel = grpc.insecure_channel(target)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            raise VerifyError(f"no gRPC server answers at {target}") from None
        self.call = self.channel.unary_stream(self.METHOD)  # bytes in, bytes out

    def send(self, sent: Sent, prompt: bytes | None, tmp: Callable[[bytes], str]) -> None:
        pcm = b""
        if prompt is not None:
            with wave.open(io.BytesIO(prompt), "rb") as wav:
                pcm = wav.readframes(wav.getnframes())
        metadata = [(k.lower(), v) for k, v in trace_headers(sent.fmt, sent.trace_id).items()]
        try:
            for _ in self.call(grpc_request(sent.mode, request_text(sent), pcm),
                               metadata=metadata, timeout=120):
                pass
        except self.grpc.RpcError as exc:
            raise OSError(f"gRPC {exc.code().name}: {exc.details()}") from None


# ------------------------------------------------------------------------------- verify

def run_verify(app_url: str | None, zipkin_url: str, requests: int = 3,
               progress: Callable[[list[Sent]], Any] | None = None,
               timeout: float = 60.0, grpc_target: str | None = None) -> Report:
    """Verify the app at ``app_url`` (Gradio or FastAPI) or the gRPC server at
    ``grpc_target`` (HOST:PORT)."""
    zipkin = ZipkinClient(zipkin_url)
    if not zipkin.health():
        raise VerifyError(f"Zipkin at {zipkin_url} does not answer /health")
    app: Any
    if grpc_target:
        kind, app = "grpc", GrpcApp(grpc_target)
    else:
        url = app_url or ""
        kind, document = detect(url)
        app = GradioApp(url, document) if kind == "gradio" else FastApiApp(url)
    report = Report(kind)
    files: list[str] = []

    def tmp(data: bytes) -> str:
        import tempfile
        with tempfile.NamedTemporaryFile("wb", suffix=".wav", delete=False) as f:
            f.write(data)
        files.append(f.name)
        return f.name

    # sft needs a preset speaker; an app that offers none (CosyVoice3) gets zero-shot only
    sft = kind != "gradio" or app.has_speakers
    plan = [Sent(secrets.token_hex(16), FORMATS[i % 3],
                 "sft" if i % 2 == 0 and sft else "zero_shot",
                 stream=i % 3 == 1, canary=f"CANARY{secrets.token_hex(6).upper()}")
            for i in range(max(1, requests))]
    if kind == "grpc":  # upstream's proto has no stream flag: the server never streams tokens
        for sent in plan:
            sent.stream = False
    # the bad input: a text over the seed's 200-character limit (traced as text_too_long on
    # the request's top span, whatever the app does with it)
    plan.append(Sent(secrets.token_hex(16), "b3multi", "sft" if sft else "zero_shot", False,
                     f"CANARY{secrets.token_hex(6).upper()}", bad=True))
    for sent in plan:
        prompt = wav_bytes() if sent.mode == "zero_shot" else None
        try:
            app.send(sent, prompt, tmp)
        except (GradioError, OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            sent.error = str(exc) or type(exc).__name__
    for name in files:
        os.unlink(name)
    sent_ok = [p for p in plan if not p.error or p.bad]
    for failed in (p for p in plan if p.error and not p.bad):
        report.checks.append(Check(f"request {failed.trace_id[:8]} ({failed.mode})", False,
                                   f"the app failed the request: {failed.error[:200]}"))
    traces = _collect(zipkin, sent_ok, timeout, progress)
    for sent in sent_ok:
        report.checks.extend(_check_one(sent, traces.get(sent.trace_id, [])))
    return report


def _ready(sent: Sent) -> Callable[[list[dict]], bool]:
    if sent.bad:
        return lambda spans: any("error" in sp["tags"] for sp in spans) and any(
            sp["name"] in (s.INFERENCE, s.ASR, s.GRADIO_EVENT) for sp in spans)
    return lambda spans: not check_synthesis(spans, sent.mode, sent.stream)


def _collect(zipkin: ZipkinClient, plan: list[Sent], timeout: float,
             progress: Callable | None) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    pending = list(plan)
    deadline = time.monotonic() + timeout
    bar = progress(plan) if progress else None
    while pending and time.monotonic() < deadline:
        for sent in list(pending):
            try:
                spans = zipkin.trace(sent.trace_id)
            except ZipkinError:
                spans = []
            found[sent.trace_id] = spans
            if spans and _ready(sent)(spans):
                pending.remove(sent)
                if bar is not None:
                    bar.update(1)
        if pending:
            time.sleep(0.5)
    if bar is not None:
        bar.update(len(pending))
    return found


def _trace_id_kept(sent: Sent, spans: list[dict]) -> Check | None:
    """None when every span read back carries the trace id the client sent (Zipkin answers a
    lookup by id: a trace under another id is an answer to another question)."""
    if not spans:
        return None
    others = sorted({sp["traceId"] for sp in spans} - {sent.trace_id, sent.trace_id[16:]})
    if others:
        return Check("", False, f"Zipkin returned spans of another trace ({others[0][:32]}) "
                                "for the client's id")
    return Check("", True)


def _check_one(sent: Sent, spans: list[dict]) -> list[Check]:
    label = f"{sent.trace_id[:8]} {sent.mode}{' stream' if sent.stream else ''} via {sent.fmt}"
    if sent.bad:
        label = f"{sent.trace_id[:8]} bad input via {sent.fmt}"
    kept = _trace_id_kept(sent, spans)
    checks = [Check(f"{label}: client trace id kept", bool(kept and kept.ok),
                    kept.reason if kept is not None else "no trace under the client's id in "
                    "Zipkin (is the app running under cosyvoice-traced?)")]
    if not kept or not kept.ok:
        return checks
    if sent.bad:
        errors = [sp for sp in spans if "error" in sp["tags"]]
        reasons = sorted({sp["tags"].get(s.ERROR_TYPE, "") for sp in errors} - {""})
        # the bad input is a text over the seed's limit: its reason is the schema's
        ok = BAD_INPUT_REASON in reasons
        checks.append(Check(f"{label}: error tag and reason", ok,
                            f"error.type={', '.join(reasons)}" if ok else
                            f"no span with error.type={BAD_INPUT_REASON} (found: "
                            f"{', '.join(reasons) or 'none'})"))
    else:
        problems = check_synthesis(spans, sent.mode, sent.stream)
        checks.append(Check(f"{label}: schema (tree, parents, timing, attributes)",
                            not problems, "; ".join(problems[:3]) + (
                                f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")))
    stored = json.dumps(spans, ensure_ascii=False)
    leaked = sent.canary in stored
    checks.append(Check(f"{label}: no request text stored", not leaked,
                        "the request's text appears in Zipkin" if leaked else ""))
    return checks
