"""What the listener hears, read back from the real Zipkin: playback stalls at the slowed hop (and
none in a smooth stream), the first chunk's parts adding up, the same input paired across two
service versions, a WAV the app wrote finding its trace, and no content in any of it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import wave

import pytest
import requests

from cosyvoice_otel import schema
from cosyvoice_otel.instrumentation.listener import normalise

from ..support.helpers import (
    BIN,
    ROOT,
    app_env,
    context_headers,
    free_port,
    new_span_id,
    new_trace_id,
)

pytestmark = pytest.mark.zipkin
THRESHOLD_MS = 100.0
SLOW_HOP, SLOW_S = 2, 2.5  # the demo engine's knob: hop 2 of each utterance, 2.5 s slower
STREAMED = "One streamed sentence that is long enough to need several hops of audio."


def start(zipkin, launch_app, model, service: str, version: str = "1.0",
          extra_env: dict[str, str] | None = None, flags: tuple[str, ...] = (),
          app_args: tuple[str, ...] = ()):
    port = free_port()
    return launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint,
                       "--service-name", service, "--service-version", version, *flags, "--",
                       "python", "examples/server.py", "--port", str(port), "--model_dir",
                       str(model), *app_args], app_env(**(extra_env or {})), port)


def sft(url: str, trace_id: str, text: str, stream: bool = False) -> bytes:
    resp = requests.get(f"{url}/inference_sft", params={"tts_text": text, "spk_id": "中文女",
                                                        "stream_mode": str(stream).lower()},
                        headers=context_headers("b3multi", trace_id, new_span_id()),
                        timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.content


def trace_of(zipkin, trace_id: str) -> list[dict]:
    def ready(spans):  # the inference span, and the server span that ends after it
        return (any(s["name"] == schema.INFERENCE for s in spans)
                and any(s.get("kind") == "SERVER" for s in spans))

    return zipkin.client().wait_for_trace(trace_id, ready, timeout=60)


def inference(spans: list[dict]) -> dict:
    return next(s for s in spans if s["name"] == schema.INFERENCE)


def chunks(span: dict) -> list[tuple[int, dict]]:
    """(timestamp in us, attributes) of each tts.chunk event, in chunk order."""
    out = []
    for annotation in span.get("annotations", []):
        value = json.loads(annotation["value"])
        if schema.CHUNK_EVENT in value:
            out.append((annotation["timestamp"], value[schema.CHUNK_EVENT]))
    return sorted(out, key=lambda item: item[1][schema.CHUNK_INDEX])


def replay(events: list[tuple[int, dict]]) -> list[float]:
    """The listener's model, recomputed from the events alone (their times and audio seconds):
    the gap before each chunk, in ms."""
    gaps, play_end = [], None
    for at_us, attrs in events:
        at, seconds = at_us / 1e6, attrs[schema.CHUNK_AUDIO_SECONDS]
        if play_end is None:
            gaps.append(0.0)
            play_end = at + seconds
            continue
        gap = max(0.0, at - play_end)
        gaps.append(gap * 1000)
        play_end = max(play_end, at) + seconds
    return gaps


@pytest.fixture(scope="module")
def two_streams(zipkin, make_model, tmp_path_factory):
    """A smooth server and one whose engine is slowed at one hop, each answering one streamed
    request (after a warm-up one): their traces."""
    from ..support.helpers import AppProcess

    model = make_model(2)
    service = f"listen-{secrets.token_hex(3)}"
    apps = []
    try:
        traces = {}
        for name, env in (("smooth", {}), ("slowed", {"COSYVOICE_DEMO_SLOW_HOP":
                                                      f"{SLOW_HOP}:{SLOW_S}"})):
            port = free_port()
            app = AppProcess([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint",
                              zipkin.endpoint, "--service-name", f"{service}-{name}", "--",
                              "python", "examples/server.py", "--port", str(port),
                              "--model_dir", str(model)], app_env(**env), port)
            apps.append(app)
            sft(app.url, new_trace_id(), "Warm up.", stream=True)
            trace_id = new_trace_id()
            sft(app.url, trace_id, STREAMED, stream=True)
            traces[name] = trace_of(zipkin, trace_id)
        yield traces
    finally:
        for app in apps:
            app.stop()


def test_a_stream_slowed_at_one_hop_stalls_at_that_chunk(two_streams) -> None:
    span = inference(two_streams["slowed"])
    tags = span["tags"]
    events = chunks(span)
    assert len(events) > SLOW_HOP + 1, "the text must need more hops than the slowed one"
    gaps = [attrs[schema.CHUNK_GAP_MS] for _, attrs in events]
    late = [i for i, gap in enumerate(gaps) if gap > THRESHOLD_MS]
    assert late == [SLOW_HOP], gaps  # the stall is counted at the slowed chunk, and only there
    assert events[SLOW_HOP][1][schema.CHUNK_LATE_PART] == "vocoder"  # where the knob sleeps
    assert all(schema.CHUNK_LATE_PART not in attrs for i, (_, attrs) in enumerate(events)
               if i != SLOW_HOP)
    # summed right: the request's figures are the events' gaps
    assert float(tags[schema.PLAYBACK_STALL_MS]) == pytest.approx(sum(gaps), abs=0.01)
    assert float(tags[schema.PLAYBACK_LONGEST_MS]) == pytest.approx(gaps[SLOW_HOP], abs=0.001)
    assert (tags[schema.PLAYBACK_STALLS], tags[schema.PLAYBACK_CONTINUOUS],
            tags[schema.PLAYBACK_LATE_PART]) == ("1", "false", "vocoder")
    assert (tags[schema.PLAYBACK_BUFFER_MS], tags[schema.PLAYBACK_THRESHOLD_MS]) == ("0.0",
                                                                                     "100.0")
    # and right: the same listener, recomputed from the events' own times and audio seconds
    replayed = replay(events)
    assert replayed[SLOW_HOP] == pytest.approx(gaps[SLOW_HOP], abs=5.0)
    audio_before = sum(attrs[schema.CHUNK_AUDIO_SECONDS] for _, attrs in events[:SLOW_HOP])
    assert gaps[SLOW_HOP] > (SLOW_S - audio_before) * 1000 - 50  # the sleep, less the audio


def test_a_smooth_stream_has_no_stall(two_streams) -> None:
    span = inference(two_streams["smooth"])
    tags = span["tags"]
    events = chunks(span)
    assert len(events) > SLOW_HOP + 1
    assert all(attrs[schema.CHUNK_GAP_MS] <= THRESHOLD_MS for _, attrs in events)
    assert (tags[schema.PLAYBACK_STALLS], tags[schema.PLAYBACK_CONTINUOUS]) == ("0", "true")
    assert schema.PLAYBACK_LATE_PART not in tags


@pytest.mark.parametrize("which", ["smooth", "slowed"])
def test_the_first_chunk_parts_add_up_to_the_first_chunk_time(two_streams, which) -> None:
    spans = two_streams[which]
    tags = inference(spans)["tags"]
    total = float(tags[schema.FIRST_CHUNK_REQUEST_MS])
    parts = {part: float(tags[schema.FIRST_CHUNK_PARTS[part]]) for part in schema.PARTS}
    assert sum(parts.values()) == pytest.approx(total, abs=1.0)  # within 1 ms
    assert all(value >= 0 for value in parts.values()), parts
    # an sft request: no queue (FastAPI), no prompt audio; the text, the LLM's first hop, flow
    # and the vocoder all took time
    assert parts["queue"] == 0 and parts["prompt_audio"] == 0
    assert min(parts["text"], parts["llm"], parts["flow"], parts["vocoder"]) > 0, parts
    # from the request's start: the server span's start to the first chunk's event
    server = next(s for s in spans if s.get("kind") == "SERVER")
    first_at = chunks(inference(spans))[0][0]
    assert total == pytest.approx((first_at - server["timestamp"]) / 1000, abs=3.0)
    assert float(tags[schema.GENAI_TIME_TO_FIRST_CHUNK]) == pytest.approx(total / 1000, abs=1e-6)


SENTENCES = (1, 2, 3, 4, 6, 9, 12)  # the paired inputs: short to long, one per count


def paired_text(count: int) -> str:
    return " ".join(f"Paired input {count}, sentence {i}." for i in range(count))


def test_same_input_pairs_the_repeated_inputs_and_finds_the_slower_vocoder(
        zipkin, launch_app, make_model, tmp_path) -> None:
    """Two versions of a service, the second with a 50% slower vocoder call, answer the same
    seven inputs (one to twelve sentences) and two inputs of their own each. The paired test
    finds the vocoder slower from seven pairs; the unpaired test on the same requests cannot
    (a long input's vocoder time dwarfs the change)."""
    model = make_model(3)
    key = tmp_path / "shared.key"
    service = f"same-{secrets.token_hex(3)}"
    servers = {version: start(zipkin, launch_app, model, service, version,
                              {"COSYVOICE_DEMO_VOCODER_DELAY_S": delay},
                              ("--fingerprint-key", str(key)))
               for version, delay in (("1.0", "0.010"), ("2.0", "0.015"))}
    assert oct(key.stat().st_mode & 0o777) == "0o600"  # made once, by the first launcher
    ids = []
    for version, server in servers.items():
        sft(server.url, new_trace_id(), f"Warm up {version}.")  # warm-up: left out
        for count in SENTENCES:
            ids.append(new_trace_id())
            sft(server.url, ids[-1], paired_text(count))
        for i in range(2):  # inputs only this side sees: never paired
            ids.append(new_trace_id())
            sft(server.url, ids[-1], f"Only version {version} hears this, number {i}.")
    for trace_id in ids:
        trace_of(zipkin, trace_id)
    result = subprocess.run(
        [str(BIN / "cosyvoice-traced"), "report", "--zipkin", zipkin.base_url, "--service",
         service, "--compare", "service.version=1.0", "--compare", "service.version=2.0",
         "--same-input", "--json"], capture_output=True, text=True, timeout=120, env=app_env(),
        cwd=ROOT)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["pairs"], data["inputs_a"], data["inputs_b"]) == (7, 9, 9), data
    vocoder = next(row for row in data["stages"] if row["stage"] == schema.VOCODER)
    assert vocoder["pairs"] == 7
    assert vocoder["paired_verdict"] == "slower", vocoder
    assert vocoder["unpaired_verdict"] == "no significant change", vocoder
    assert vocoder["paired_p"] < 0.05 <= vocoder["unpaired_p"]
    # the fingerprint is the shared secret's HMAC of the input: not a plain hash of the text
    spans = trace_of(zipkin, ids[0])
    print_ = inference(spans)["tags"][schema.INPUT_FINGERPRINT]
    text = normalise(paired_text(SENTENCES[0]))
    assert print_ != hashlib.sha256(text.encode()).hexdigest()[:16]
    mac = hmac.new(key.read_text().strip().encode(), digestmod=hashlib.sha256)
    for name, value in (("mode", "sft"), ("tts_text", text), ("spk_id", "中文女"),
                        ("speed", "1.0"), ("stream", "0")):
        data_ = value.encode()
        mac.update(f"{name}:{len(data_)}:".encode())
        mac.update(data_)
    assert print_ == mac.hexdigest()[:16]
    exported = json.dumps(spans, ensure_ascii=False)
    assert "Paired input" not in exported and key.read_text().strip() not in exported


def test_a_wav_the_app_wrote_finds_its_trace(zipkin, launch_app, make_model, tmp_path) -> None:
    saved = tmp_path / "outputs"
    service = f"wav-{secrets.token_hex(3)}"
    server = start(zipkin, launch_app, make_model(3), service,
                   app_args=("--save-dir", str(saved)))
    trace_id, other = new_trace_id(), new_trace_id()
    pcm = sft(server.url, trace_id, "Keep this answer as a file, please.")
    sft(server.url, other, "And this one too, another file.")
    spans = trace_of(zipkin, trace_id)
    trace_of(zipkin, other)
    files = sorted(saved.glob("output_*.wav"))
    assert len(files) == 2
    with wave.open(str(files[0])) as w:
        assert w.readframes(w.getnframes()) == pcm  # the file holds what the client heard
    server_span = next(s for s in spans if s.get("kind") == "SERVER")
    assert server_span["tags"][schema.OUTPUT_FILE] == files[0].name
    base = [str(BIN / "cosyvoice-traced"), "triage", "--zipkin", zipkin.base_url, "--service",
            service, "--audio"]

    def triage(path, *extra):
        return subprocess.run([*base, str(path), *extra], capture_output=True, text=True,
                              timeout=120, env=app_env(), cwd=ROOT)

    found = triage(files[0], "--json")
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert [(r["trace_id"], r["matched_by"]) for r in rows] == [(trace_id, "file digest")]
    # a lossless copy under another name: the digest still finds it
    copy = tmp_path / "complaint.wav"
    copy.write_bytes(files[0].read_bytes())
    rows = json.loads(triage(copy, "--json").stdout)
    assert [(r["trace_id"], r["matched_by"]) for r in rows] == [(trace_id, "file digest")]
    # re-encoded (here: its samples halved, as a gain change would): no digest, no name; the
    # candidates are the requests around its time with as much audio
    with wave.open(str(files[0])) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    import array

    samples = array.array("h", frames)
    quieter = tmp_path / "quieter.wav"
    with wave.open(str(quieter), "wb") as w:
        w.setparams(params)
        w.writeframes(array.array("h", (x // 2 for x in samples)).tobytes())
    guessed = triage(quieter)
    assert guessed.returncode == 0, guessed.stdout + guessed.stderr
    assert trace_id in guessed.stdout and "time and duration" in guessed.stdout
    # not a WAV: one line, exit 1, no traceback
    junk = tmp_path / "answer.mp3"
    junk.write_bytes(b"ID3" + os.urandom(64))
    miss = triage(junk)
    assert miss.returncode == 1 and "not a WAV" in miss.stdout and "Traceback" not in (
        miss.stdout + miss.stderr)
