"""Upstream CosyVoice's REAL engine, traced: PyPI's cosyvoice-minicpmo (upstream's CosyVoice and
CosyVoice2 code, unmodified) on tiny random-weights models its own loader accepts, run under the
launcher with the real Zipkin. Every mode of each version, stream on and off, streamed text
input, add_zero_shot_spk, an error inside the real frontend; our FastAPI and Gradio apps loading
the real package; doctor reading its source. The demo engine is a stand-in; this is the truth.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess

import pytest
import requests

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools.checks import check_synthesis

from ..support.helpers import BIN, ROOT, app_env, free_port, new_span_id, new_trace_id

pytestmark = [pytest.mark.zipkin]
# two workers run them: v2's eleven cases (one engine process that the complete-trace and the
# frontend-error tests both read: same worker) and the rest; the engine's processes are heavy,
# so not more than two at once
V2_RUN = pytest.mark.xdist_group("real-engine-v2")
OTHERS = pytest.mark.xdist_group("real-engine")
HTTP_LOG = ("Starting new HTTP connection", "POST /api/v2/spans")


_RUNS: dict[str, tuple[list[dict], str, str]] = {}
# an upstream checkout (COSYVOICE_UPSTREAM, README) brings CosyVoice3; PyPI's package has v1, v2
CHECKOUT = os.environ.get("COSYVOICE_UPSTREAM", "")
VERSIONS = ["1", "2", "3"] if CHECKOUT else ["1", "2"]
CASES = {"1": 7, "2": 11, "3": 7}


def engine_env(version: str, **extra: str) -> dict[str, str]:
    """The app's environment: v3 runs the checkout's code; v1 and v2 always PyPI's package
    (the checkout's newer frontend takes prompt files where PyPI's takes tensors, and has
    no text normaliser to fail in)."""
    env = app_env(**extra)
    if version != "3":
        env.pop("COSYVOICE_UPSTREAM", None)
    return env


def run_cases(real_engine, zipkin, version: str, prompt_file):
    """Every case of one engine version, run ONCE per test session under the launcher (the
    complete-trace and the error tests read the same run): (cases, stderr, canary)."""
    if version not in _RUNS:
        canary = f"CANARY{secrets.token_hex(5).upper()}"
        cases, stderr = _run_cases(real_engine, zipkin, version, prompt_file, canary)
        _RUNS[version] = (cases, stderr, canary)
    return _RUNS[version]


def _run_cases(real_engine, zipkin, version: str, prompt_file, canary: str):
    service = f"real-v{version}-{secrets.token_hex(3)}"
    args = [version, str(real_engine.models[version]), str(prompt_file)]
    if version == "2":
        args.append(str(real_engine.models["fill"]))
    out = subprocess.run([str(real_engine.bin / "cosyvoice-traced"), "run", "--zipkin-endpoint",
                          zipkin.endpoint, "--service-name", service, "--", "python",
                          "tests/support/apps/real_engine_cases.py", *args],
                         cwd=ROOT, env=engine_env(version, CANARY=canary), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    cases = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return cases, out.stderr


def tag(span: dict, key: str) -> str | None:
    return span["tags"].get(key)


def listened(inference: dict) -> dict[str, float]:
    """A streamed request on upstream's engine: its first chunk's parts add up (within 1 ms)
    and name the real LLM, flow and vocoder; its playback figures are its chunks' gaps."""
    parts = {p: float(tag(inference, s.FIRST_CHUNK_PARTS[p]) or "nan") for p in s.PARTS}
    assert sum(parts.values()) == pytest.approx(float(tag(inference, s.FIRST_CHUNK_REQUEST_MS)),
                                                abs=1.0), parts
    assert min(parts.values()) >= 0 and min(parts["llm"], parts["flow"], parts["vocoder"]) > 0
    gaps = [json.loads(a["value"])[s.CHUNK_EVENT][s.CHUNK_GAP_MS]
            for a in inference.get("annotations", []) if s.CHUNK_EVENT in a["value"]]
    assert len(gaps) > 1
    assert float(tag(inference, s.PLAYBACK_STALL_MS)) == pytest.approx(sum(gaps), abs=0.01)
    assert int(tag(inference, s.PLAYBACK_STALLS)) == sum(g > 100 for g in gaps)
    return parts


@pytest.mark.parametrize("version", [pytest.param(v, marks=V2_RUN if v == "2" else OTHERS)
                                     for v in VERSIONS])
def test_every_mode_of_the_real_engine_gives_a_complete_trace(real_engine, zipkin, prompt_file,
                                                              version) -> None:
    cases, stderr, canary = run_cases(real_engine, zipkin, version, prompt_file)
    assert len(cases) == CASES[version], [c["name"] for c in cases]
    client = zipkin.client()
    for case in cases:
        if case["name"] == "v2 frontend error":
            continue
        assert case["error"] == "", case
        if case["mode"] == "speaker_add":
            spans = client.wait_for_trace(case["trace_id"], lambda sp: len(sp) >= 6, timeout=60)
            assert {s.SPEAKER_ADD, "tts_frontend.zero_shot",
                    "audio_preprocess.speech_tokenizer"} <= {sp["name"] for sp in spans}
            continue
        spans = client.wait_for_trace(
            case["trace_id"], lambda sp, c=case: not check_synthesis(sp, c["mode"], c["stream"]),
            timeout=60)
        assert check_synthesis(spans, case["mode"], case["stream"]) == [], case["name"]
        assert canary not in json.dumps(spans, ensure_ascii=False), case["name"]
        inference = next(sp for sp in spans if sp["name"] == s.INFERENCE)
        assert tag(inference, s.MODEL_VERSION) == version
        assert tag(inference, s.END_REASON) == "completed"
        hops = [sp for sp in spans if sp["name"] == s.TOKEN2WAV]
        delivered = sum(float(tag(hop, s.HOP_AUDIO_SECONDS) or 0) for hop in hops)
        # what the hops delivered adds up to the request's audio, whatever flow re-processed
        assert delivered == pytest.approx(float(tag(inference, s.AUDIO_SECONDS)), abs=0.01)
        if case["stream"]:
            assert len(hops) > 1, case["name"]
            listened(inference)
        if case["name"] == "v2 bistream":
            assert tag(inference, s.TEXT_STREAMED) == "true"
        if case["name"] == "v2 cached speaker":
            assert tag(inference, s.ZERO_SHOT_SPK_ID) == "cached-voice"
    # quiet at any root level: upstream sets the root logger to DEBUG, and our exporter's HTTP
    # client must not write into the app's log
    assert not [line for line in stderr.splitlines() if any(m in line for m in HTTP_LOG)]
    assert "DEBUG" in stderr  # (the app's own DEBUG lines are there: the root level is DEBUG)


@V2_RUN
def test_an_error_inside_the_real_frontend_ends_with_the_schemas_attributes(real_engine, zipkin,
                                                                            prompt_file) -> None:
    cases, _, _ = run_cases(real_engine, zipkin, "2", prompt_file)
    (case,) = [c for c in cases if c["name"] == "v2 frontend error"]
    assert case["error"].startswith("AttributeError")  # the package ships no text normaliser
    spans = zipkin.client().wait_for_trace(
        case["trace_id"], lambda sp: any(x["name"] == s.INFERENCE for x in sp), timeout=60)
    inference = next(sp for sp in spans if sp["name"] == s.INFERENCE)
    normalize = next(sp for sp in spans if sp["name"] == s.TEXT_NORMALIZE)
    assert tag(normalize, s.ERROR_TYPE) == "AttributeError"
    assert tag(inference, s.ERROR_TYPE) == "AttributeError"
    # required by the schema, 0 when nothing was produced before the error
    assert (tag(inference, s.END_REASON), tag(inference, s.CHUNK_COUNT),
            tag(inference, s.AUDIO_SECONDS)) == ("error", "0", "0.0")
    request = next(sp for sp in spans if sp["name"] == "request")
    assert tag(request, s.ERROR_TYPE) == "AttributeError"


def start_real(launch_app, real_engine, zipkin, app: str, version: str):
    port = free_port()
    service = f"real-{app}-{secrets.token_hex(3)}"
    running = launch_app([str(real_engine.bin / "cosyvoice-traced"), "run", "--zipkin-endpoint",
                          zipkin.endpoint, "--service-name", service, "--", "python",
                          f"examples/{app}.py", "--engine", "real", "--port", str(port),
                          "--model_dir", str(real_engine.models[version])], engine_env(version), port)
    running.service = service
    return running


@OTHERS
def test_our_fastapi_server_on_the_real_engine(real_engine, zipkin, launch_app,
                                               prompt_file) -> None:
    """v2 (v1's engine runs every mode in the complete-trace test; the app path is the same)."""
    app = start_real(launch_app, real_engine, zipkin, "server", "2")
    canary = f"CANARY{secrets.token_hex(5).upper()}"
    sent = []
    for mode, stream in (("sft", False), ("sft", True), ("zero_shot", True)):
        trace_id = new_trace_id()
        headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(), "X-B3-Sampled": "1"}
        text = f"Hello there from the real engine, {canary}."
        if mode == "sft":
            resp = requests.get(f"{app.url}/inference_sft", headers=headers, timeout=120,
                                params={"tts_text": text, "spk_id": "中文女",
                                        "stream_mode": str(stream).lower()})
        else:
            resp = requests.post(f"{app.url}/inference_zero_shot", headers=headers, timeout=120,
                                 data={"tts_text": text, "prompt_text": f"prompt {canary}",
                                       "stream_mode": str(stream).lower()},
                                 files={"prompt_wav": ("p.wav", prompt_file.read_bytes())})
        assert resp.status_code == 200 and len(resp.content) > 1000, resp.text[:300]
        sent.append((trace_id, mode, stream))
    client = zipkin.client()
    for trace_id, mode, stream in sent:
        spans = client.wait_for_trace(trace_id, lambda sp, m=mode, st=stream: not check_synthesis(
            sp, m, st), timeout=60)
        assert check_synthesis(spans, mode, stream) == [], (mode, stream)
        server = next(sp for sp in spans if sp.get("kind") == "SERVER")
        assert server["traceId"] == trace_id  # the client's trace, kept
        inference = next(sp for sp in spans if sp["name"] == s.INFERENCE)
        if stream:
            parts = listened(inference)
            assert (parts["prompt_audio"] > 0) is (mode == "zero_shot"), parts
        assert len(tag(inference, s.INPUT_FINGERPRINT) or "") == 16
        assert canary not in json.dumps(spans, ensure_ascii=False)
    output = app.stop()
    assert not [line for line in output.splitlines() if any(m in line for m in HTTP_LOG)]


@OTHERS
@pytest.mark.parametrize("version", ["2", "3"] if CHECKOUT else ["2"])
def test_verify_passes_on_our_webui_with_the_real_engine(real_engine, zipkin, launch_app,
                                                         version) -> None:
    """v3: no preset speakers, and texts that need <|endofprompt|>: verify picks them from
    what the app offers."""
    app = start_real(launch_app, real_engine, zipkin, "webui", version)
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "verify", "--app", app.url, "--zipkin",
                          zipkin.base_url, "--json", "--requests", "3"], cwd=ROOT,
                         env=app_env(), capture_output=True, text=True, timeout=600)
    result = json.loads(out.stdout)
    failed = [c for c in result["checks"] if not c["ok"]]
    assert out.returncode == 0 and result["ok"], failed


@OTHERS
@pytest.mark.parametrize("version", VERSIONS)
def test_doctor_reads_the_real_package_and_each_tiny_model(real_engine, version) -> None:
    source = CHECKOUT if version == "3" else str(real_engine.site_packages)
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "doctor", "--cosyvoice-path", source,
                          "--model-dir", str(real_engine.models[version])], cwd=ROOT,
                         env=engine_env(version),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("ok") and "stage map" in line and "targets found" in line
               for line in lines)
    for stage in ("acoustic_model", "flow", "vocoder"):
        assert any(line.startswith("ok") and line.split()[1].startswith(stage) for line in lines), (
            stage, lines)
