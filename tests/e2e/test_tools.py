"""verify, report and doctor against the real Zipkin and the demo apps."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from cosyvoice_otel import schema
from cosyvoice_otel.tools import report as rep

from ..support.helpers import BIN, ROOT, app_env, free_port, new_span_id, new_trace_id, wait_until
from ..support.loopback_server import LoopbackServer, QuietHandler

TRACED = str(BIN / "cosyvoice-traced")


def run_cli(*args: str, timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([TRACED, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=app_env())


def start_app(launch_app, zipkin, model: Path, app: str, *run_flags: str, traced: bool = True):
    port = free_port()
    service = f"verify-{app}-{secrets.token_hex(3)}"
    program = ["python", f"examples/{app}.py", "--port", str(port), "--model_dir", str(model)]
    argv = [TRACED, "run", "--zipkin-endpoint", zipkin.endpoint, "--service-name",
            service, *run_flags, "--", *program] if traced \
        else [str(BIN / "python"), *program[1:]]
    running = launch_app(argv, app_env(), port)
    running.service = service
    return running


def verify(app_url: str, zipkin, *extra: str) -> tuple[int, dict]:
    result = run_cli("verify", "--app", app_url, "--zipkin", zipkin.base_url, "--json",
                     "--requests", "3", *extra)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.zipkin
@pytest.mark.parametrize("app", ["webui", "server"])
def test_verify_passes_on_the_traced_demo_apps(zipkin, launch_app, make_model, app) -> None:
    running = start_app(launch_app, zipkin, make_model(3), app)
    code, result = verify(running.url, zipkin)
    failed = [c for c in result["checks"] if not c["ok"]]
    assert code == 0 and result["ok"] and not failed, failed
    names = " ".join(c["name"] for c in result["checks"])
    for needle in ("b3single", "b3multi", "w3c", "bad input", "error tag", "no request text"):
        assert needle in names


@pytest.mark.zipkin
def test_verify_fails_without_the_launcher(zipkin, launch_app, make_model) -> None:
    running = start_app(launch_app, zipkin, make_model(3), "server", traced=False)
    code, result = verify(running.url, zipkin, "--timeout", "8")
    assert code == 1 and not result["ok"]
    reasons = [c["reason"] for c in result["checks"] if not c["ok"]]
    assert any("no trace under the client's id" in r for r in reasons)


@pytest.mark.zipkin
@pytest.mark.parametrize(("app", "flag"), [("server", "--no-stage-spans"),
                                           ("webui", "--no-stage-spans"),
                                           ("webui", "--no-gradio-bridge")])
def test_verify_fails_with_a_clear_reason_when_tracing_is_partial(zipkin, launch_app,
                                                                  make_model, app, flag) -> None:
    running = start_app(launch_app, zipkin, make_model(3), app, flag)
    code, result = verify(running.url, zipkin, "--timeout", "10")
    assert code == 1
    reasons = " ".join(c["reason"] for c in result["checks"] if not c["ok"])
    assert "missing stage spans" in reasons or "no span with error.type=text_too_long" in reasons


class LyingZipkin(LoopbackServer):
    """Answers /health UP, and the same trace to every lookup by id: an answer to another
    question (a misrouted proxy, a cache keyed on nothing)."""

    def __init__(self, trace: list[dict]) -> None:
        body = json.dumps(trace).encode()

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                out = b'{"status": "UP"}' if self.path == "/health" else body
                self.reply(200, out, "application/json")

        super().__init__(Handler, "")


@pytest.mark.zipkin
def test_verify_fails_against_a_zipkin_that_answers_another_trace(zipkin, launch_app,
                                                                   make_model) -> None:
    running = start_app(launch_app, zipkin, make_model(3), "server")
    code, result = verify(running.url, zipkin)  # a real, complete trace to lie with
    assert code == 0, result
    service_traces = zipkin.client().traces(service=running.service, limit=1,
                                            span_name="cosyvoice.inference")
    assert service_traces
    with LyingZipkin(service_traces[0]) as liar:
        out = run_cli("verify", "--app", running.url, "--zipkin", liar.endpoint, "--json",
                      "--requests", "2", "--timeout", "5")
    lied = json.loads(out.stdout)
    assert out.returncode == 1 and not lied["ok"]
    kept = [c for c in lied["checks"] if c["name"].endswith("client trace id kept")]
    assert kept and not any(c["ok"] for c in kept)
    assert all("another trace" in c["reason"] for c in kept)


def test_verify_bad_input_is_one_line_exit_2() -> None:
    result = run_cli("verify", "--app", "not-a-url", "--zipkin", "http://127.0.0.1:9")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--app" in result.stderr


# ------------------------------------------------------------------------------------- report

def synthetic_traces(service: str, version: str, vocoder_ms: list[int],
                     inference_tags: list[dict] | None = None) -> list[list[dict]]:
    """One trace per vocoder duration: gradio.event 1000 ms > inference 900 ms > vocoder;
    ``inference_tags[i]`` adds tags to the i-th request's inference span."""
    now = int(time.time() * 1e6) - 60_000_000
    traces = []
    for i, voc in enumerate(vocoder_ms):
        trace_id = secrets.token_hex(16)
        ids = [secrets.token_hex(8) for _ in range(3)]
        endpoint = {"serviceName": service}
        tags = {"service.version": version}
        start = now + i * 2_000_000
        spans = [
            {"traceId": trace_id, "id": ids[0], "name": "gradio.event", "kind": "CONSUMER",
             "timestamp": start, "duration": 1_000_000, "localEndpoint": endpoint, "tags": tags},
            {"traceId": trace_id, "id": ids[1], "parentId": ids[0], "name": "cosyvoice.inference",
             "timestamp": start + 10, "duration": 900_000, "localEndpoint": endpoint,
             "tags": {**tags, **(inference_tags[i] if inference_tags else {})}},
            {"traceId": trace_id, "id": ids[2], "parentId": ids[1], "name": "vocoder",
             "timestamp": start + 20, "duration": voc * 1000, "localEndpoint": endpoint,
             "tags": {**tags, **({"error": "Boom", "error.type": "Boom"} if voc == 700 else {})}},
        ]
        traces.append(spans)
    return traces


def post(zipkin, traces: list[list[dict]]) -> None:
    body = json.dumps([span for trace in traces for span in trace]).encode()
    req = urllib.request.Request(zipkin.endpoint, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202


@pytest.mark.zipkin
def test_report_figures_match_known_synthetic_traces(zipkin, tmp_path) -> None:
    service = f"report-{secrets.token_hex(3)}"
    v1 = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]  # ms
    v2 = [50, 60, 70, 80]
    post(zipkin, synthetic_traces(service, "v1", v1) + synthetic_traces(service, "v2", v2))
    assert wait_until(lambda: len(zipkin.client().traces(service=service, lookback_ms=600_000,
                                                          limit=100)) == 14)
    html = tmp_path / "report.html"
    result = run_cli("report", "--zipkin", zipkin.base_url, "--service", service, "--json",
                     "--html", str(html))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["all"]
    vocoder = data["stages"]["vocoder"]
    everything = sorted(v1 + v2)
    assert data["requests"] == 14
    assert vocoder["count"] == 14
    assert vocoder["p50_us"] == rep.percentile(everything, 50) * 1000 == 300_000  # rank 7 of 14
    assert vocoder["p95_us"] == 1_000_000 and vocoder["p99_us"] == 1_000_000
    assert vocoder["share"] == pytest.approx(sum(everything) / (14 * 1000))
    assert data["stages"]["cosyvoice.inference"]["share"] == pytest.approx(0.9)
    assert data["errors_by_type"] == {"Boom": 1}
    assert data["slowest"][0]["duration_us"] == 1_000_000
    assert data["slowest"][0]["link"].endswith(data["slowest"][0]["trace_id"])
    assert "note:" not in result.stderr  # unsampled traces: no bias note
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "vocoder" in page
    assert "<script" not in page and "http-equiv" not in page  # self-contained, static

    by = run_cli("report", "--zipkin", zipkin.base_url, "--service", service, "--json", "--by",
                 "service.version")
    groups = json.loads(by.stdout)
    assert groups["v1"]["stages"]["vocoder"]["p50_us"] == 500_000
    assert groups["v2"]["stages"]["vocoder"]["p50_us"] == 60_000
    assert groups["v2"]["requests"] == 4

    breached = run_cli("report", "--zipkin", zipkin.base_url, "--service", service,
                       "--alert", "vocoder.p95>900ms", "--alert", "vocoder.p50>5s")
    assert breached.returncode == 1
    assert "ALERT vocoder.p95>900ms: actual 1.000 s" in breached.stderr
    assert "vocoder.p50>5s" not in breached.stderr
    calm = run_cli("report", "--zipkin", zipkin.base_url, "--service", service,
                   "--alert", "vocoder.p95>5s")
    assert calm.returncode == 0


@pytest.mark.zipkin
def test_report_says_when_its_traces_are_a_sample(zipkin) -> None:
    service = f"sampled-{secrets.token_hex(3)}"
    traces = synthetic_traces(service, "v1", [100, 200, 300])
    for spans in traces:  # what our sampler writes on the span where it decided
        spans[0]["tags"][schema.SAMPLING_RATE] = "0.1"
    post(zipkin, traces)
    assert wait_until(lambda: len(zipkin.client().traces(service=service, lookback_ms=600_000,
                                                          limit=10)) == 3)
    result = run_cli("report", "--zipkin", zipkin.base_url, "--service", service, "--json")
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # the note is not in the JSON document
    assert "sampling rate 10%" in result.stderr and "tts_request_duration_seconds" in result.stderr


@pytest.mark.parametrize(("rates", "expected"), [
    ((), None), (("0.1",), "sampling rate 10%"), (("0.5", "0.25"), "sampling rate 25%, 50%"),
    (("junk",), None)])
def test_sampling_note(rates, expected) -> None:
    traces = [[{"tags": {schema.SAMPLING_RATE: r}}] for r in rates] + [[{"tags": {}}]]
    note = rep.sampling_note(traces)
    assert (note is None) if expected is None else (expected in note and "biased" in note)


def test_report_figures_on_ten_thousand_traces() -> None:
    """Correctness at volume (its speed is a benchmark's business, not a test's)."""
    durations = [i % 997 + 1 for i in range(10_000)]
    traces = synthetic_traces("bulk", "v1", durations)
    groups = rep.analyse(traces)
    text = rep.to_text(groups, "http://zipkin")
    vocoder = groups["all"].stages["vocoder"]
    ordered = sorted(durations)
    assert vocoder.stat("count") == 10_000
    for q in (50, 95, 99):  # nearest rank, as the report documents
        expected_ms = ordered[max(0, -(-q * len(ordered) // 100) - 1)]
        assert vocoder.stat(f"p{q}") == expected_ms * 1000, q  # microseconds
    assert "vocoder" in text and "10000" in text.replace(",", "")


@pytest.mark.parametrize(("inflight", "bucket"), [("1", "1"), ("2", "2"), ("3", "3-4"),
                                                  ("4", "3-4"), ("5", "5-8"), ("8", "5-8"),
                                                  ("9", "9+"), ("40", "9+"), (None, "(none)"),
                                                  ("x", "(none)")])
def test_concurrency_buckets(inflight, bucket) -> None:
    assert rep.concurrency_bucket(inflight) == bucket


def test_report_by_concurrency_leaves_warmup_out_and_counts_interruptions() -> None:
    tags = [{"cosyvoice.inflight": "1", "cosyvoice.warmup": "true"},
            {"cosyvoice.inflight": "1", "cosyvoice.warmup": "false"},
            {"cosyvoice.inflight": "2", "cosyvoice.warmup": "false",
             "cosyvoice.end_reason": "interrupted"},
            {"cosyvoice.inflight": "6", "cosyvoice.warmup": "false"},
            {"cosyvoice.inflight": "7", "cosyvoice.warmup": "false",
             "cosyvoice.load_trt": "true"}]
    traces = synthetic_traces("c", "v1", [100, 200, 300, 400, 500], tags)
    groups = rep.analyse(traces, "concurrency")
    assert {k: len(g.requests) for k, g in groups.items()} == {"1": 1, "2": 1, "5-8": 2}
    assert groups["1"].warmup_excluded == 1 and groups["1"].stages["vocoder"].stat("p50") == 200_000
    assert groups["2"].interrupted == 1
    text = rep.to_text(groups, "http://z")
    assert "[1] warm-up requests left out: 1 (--include-warmup keeps them)" in text
    assert "[2] interrupted requests (client went away): 1" in text
    data = rep.to_dict(groups, "http://z")
    assert data["1"]["warmup_excluded"] == 1 and data["2"]["interrupted"] == 1
    kept = rep.analyse(traces, "concurrency", include_warmup=True)
    assert len(kept["1"].requests) == 2 and kept["1"].warmup_excluded == 0
    by_trt = rep.analyse(traces, "cosyvoice.load_trt")  # a tag of the inference span
    assert {k: len(g.requests) for k, g in by_trt.items()} == {"true": 1, "(none)": 3}


@pytest.mark.parametrize("rule", ["vocoder>5s", "vocoder.p95>>5s", "vocoder.p95>5h",
                                  "errors.count>3ms"])
def test_bad_alert_rules_are_usage_errors(rule) -> None:
    result = run_cli("report", "--zipkin", "http://127.0.0.1:9", "--alert", rule)
    assert result.returncode == 2 and "--alert" in result.stderr
    assert result.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------- doctor

def test_doctor_is_happy_with_the_demo_engine() -> None:
    result = run_cli("doctor", "--cosyvoice-path", str(ROOT / "examples"))
    assert result.returncode == 0, result.stdout
    assert "ok    cosyvoice instrumentor: will load" in result.stdout
    assert "targets found" in result.stdout


def test_doctor_flags_a_renamed_stage_target(tmp_path) -> None:
    fork = tmp_path / "fork"
    shutil.copytree(ROOT / "examples" / "cosyvoice", fork / "cosyvoice")
    model = fork / "cosyvoice" / "cli" / "model.py"
    model.write_text(model.read_text().replace("def token2wav(", "def tokens_to_wave("))
    result = run_cli("doctor", "--cosyvoice-path", str(fork))
    assert result.returncode == 1
    assert "fail  stage target: cosyvoice.cli.model:CosyVoiceModel.token2wav (no method " \
           "token2wav: renamed?)" in result.stdout


EXPECTED_CLASSES = {
    1: ("TransformerLM", "MaskedDiffWithXvec", "HiFTGenerator"),
    2: ("Qwen2LM", "CausalMaskedDiffWithXvec", "HiFTGenerator"),
    3: ("CosyVoice3LM", "CausalMaskedDiffWithDiT", "CausalHiFTGenerator"),
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_doctor_model_dir_says_every_stage_of_each_demo_version_is_traced(make_model,
                                                                          version) -> None:
    result = run_cli("doctor", "--cosyvoice-path", str(ROOT / "examples"), "--model-dir",
                     str(make_model(version)))
    assert result.returncode == 0, result.stdout
    llm, flow, hift = EXPECTED_CLASSES[version]
    lines = result.stdout.splitlines()
    for span, cls in (("acoustic_model", llm), ("flow", flow), ("vocoder", hift)):
        assert any(line.startswith(f"ok    {span}: {cls}.inference (defined by ")
                   for line in lines), (span, result.stdout)
    runner = {1: "CosyVoiceModel", 2: "CosyVoice2Model", 3: "CosyVoice3Model"}[version]
    assert f"ok    model.tts/token2wav: {runner} found" in result.stdout


def fork_model(tmp_path, make_model, **classes: str):
    """A v3 model directory whose config names other classes, and a fork package with them."""
    sys.path.insert(0, str(ROOT / "examples"))
    import make_tiny_model

    model = tmp_path / "model"
    shutil.copytree(make_model(3), model)
    (model / "cosyvoice3.yaml").write_text(make_tiny_model.config_text(3, **classes))
    fork = tmp_path / "src" / "myfork"
    fork.mkdir(parents=True)
    (fork / "__init__.py").write_text("")
    (fork / "vocoders.py").write_text(
        "from cosyvoice.hifigan.generator import CausalHiFTGenerator as Base\n\n\n"
        "class Inherits(Base):\n    pass\n\n\n"
        "class Silent:\n    def vocode(self, mel):\n        return mel\n")
    return model, tmp_path / "src"


def test_doctor_model_dir_follows_a_forks_class_to_the_base_that_defines_the_method(
        tmp_path, make_model) -> None:
    model, src = fork_model(tmp_path, make_model, hift="myfork.vocoders.Inherits")
    result = run_cli("doctor", "--cosyvoice-path", str(ROOT / "examples"), "--model-dir",
                     str(model), cwd=src)
    assert result.returncode == 0, result.stdout
    assert ("ok    vocoder: Inherits.inference (defined by "
            "cosyvoice.hifigan.generator:CausalHiFTGenerator) traced by the hift role"
            in result.stdout)


@pytest.mark.parametrize(("hift", "why"), [
    ("myfork.vocoders.Missing", "class myfork.vocoders.Missing not found"),
    ("nowhere.at_all.Vocoder", "class nowhere.at_all.Vocoder not found"),
    ("myfork.vocoders.Silent", "myfork.vocoders.Silent has no inference() method"),
])
def test_doctor_model_dir_fails_on_a_class_whose_stage_would_be_missing(tmp_path, make_model,
                                                                       hift, why) -> None:
    model, src = fork_model(tmp_path, make_model, hift=hift)
    result = run_cli("doctor", "--cosyvoice-path", str(ROOT / "examples"), "--model-dir",
                     str(model), cwd=src)
    assert result.returncode == 1, result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("fail  vocoder:"))
    module, _, cls = hift.rpartition(".")
    assert why in line and f"--stage vocoder={module}:{cls}." in line
    assert "ok    flow: CausalMaskedDiffWithDiT.inference" in result.stdout  # the rest still ok


def test_doctor_model_dir_accepts_the_stage_row_it_suggested(tmp_path, make_model) -> None:
    model, src = fork_model(tmp_path, make_model, hift="myfork.vocoders.Silent")
    result = run_cli("doctor", "--cosyvoice-path", str(ROOT / "examples"), "--model-dir",
                     str(model), "--stage", "vocoder=myfork.vocoders:Silent.vocode", cwd=src)
    assert result.returncode == 0, result.stdout
    assert "ok    vocoder: traced by --stage vocoder=myfork.vocoders:Silent.vocode" in result.stdout


def test_doctor_model_dir_without_a_config_or_with_a_bad_stage(tmp_path) -> None:
    result = run_cli("doctor", "--cosyvoice-path", str(ROOT / "examples"), "--model-dir",
                     str(tmp_path))
    assert result.returncode == 1
    assert "fail  model config: none of cosyvoice.yaml, cosyvoice2.yaml, cosyvoice3.yaml" \
        in result.stdout
    bad = run_cli("doctor", "--stage", "nonsense")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--stage" in bad.stderr


@pytest.mark.zipkin
def test_doctor_reports_zipkin_version_and_clock(zipkin, refused_endpoint) -> None:
    result = run_cli("doctor", "--zipkin", zipkin.base_url, "--cosyvoice-path",
                     str(ROOT / "examples"))
    assert result.returncode == 0, result.stdout
    assert "answers, version 3." in result.stdout
    assert "clock offset vs zipkin" in result.stdout
    down = run_cli("doctor", "--zipkin", refused_endpoint.rsplit("/api", 1)[0], "--cosyvoice-path",
                   str(ROOT / "examples"))
    assert down.returncode == 1 and "fail  zipkin:" in down.stdout


@pytest.mark.zipkin
def test_zipkin_started_here_offers_the_attribution_tags_as_ui_filters(zipkin) -> None:
    from cosyvoice_otel import schema

    service = f"autocomplete-{secrets.token_hex(3)}"
    tags = [{"cosyvoice.mode": "sft", "cosyvoice.end_reason": "interrupted",
             "cosyvoice.warmup": "true"}]
    post(zipkin, synthetic_traces(service, "v9", [100], tags))
    client = zipkin.client()
    assert set(schema.AUTOCOMPLETE_KEYS) <= set(client._get("/api/v2/autocompleteKeys"))
    assert wait_until(lambda: "interrupted" in client._get(
        "/api/v2/autocompleteValues", key="cosyvoice.end_reason"))
    assert "v9" in client._get("/api/v2/autocompleteValues", key="service.version")


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (Linux /proc, hex as there)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, _, hex_port = fields[1].partition(":")
                if fields[3] == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


def test_a_zipkin_started_here_listens_on_loopback_only(zipkin) -> None:
    """It holds every trace: reachable from this machine only, unless told otherwise
    (`zipkin start --host 0.0.0.0`)."""
    addresses = listening_addresses(zipkin.port)
    assert addresses, "nothing listens on Zipkin's port"
    # 127.0.0.1 as /proc writes it, as IPv4 or IPv4-mapped IPv6; never 0.0.0.0 or ::
    assert addresses <= {"0100007F", "0000000000000000FFFF00000100007F"}, addresses
    bad = run_cli("zipkin", "start", "--host", "not a host", "--port", "9")
    assert bad.returncode == 2 and "--host" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------ report --compare

def test_mann_whitney_p_matches_the_textbook_normal_approximation() -> None:
    # U = 0 for two separated samples of 5: z = (12.5 - 0.5) / sqrt(25 * 11 / 12)
    assert rep.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(0.01219,
                                                                                   abs=1e-5)
    assert rep.mann_whitney_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert rep.mann_whitney_p([5] * 6, [5] * 6) == 1.0  # all tied: no evidence
    symmetric = rep.mann_whitney_p([1, 3, 5, 7, 9], [2, 4, 6, 8, 10])
    assert 0.5 < symmetric <= 1.0


def stats(name: str, values: list[float]) -> rep.StageStats:
    return rep.StageStats(name, sorted(values))


@pytest.mark.parametrize(("a", "b", "verdict"), [
    ([100 + i for i in range(20)], [200 + i for i in range(20)], "slower"),
    ([200 + i for i in range(20)], [100 + i for i in range(20)], "faster"),
    ([100 + i for i in range(20)], [100 + i for i in range(20)], "no significant change"),
    # significant but tiny: medians 1% apart is no change worth a verdict
    ([1000 + i for i in range(200)], [1010 + i for i in range(200)], "no significant change"),
    ([100, 101, 102, 103], [300, 301, 302, 303], "too few samples"),
])
def test_compare_verdicts(a, b, verdict) -> None:
    row = rep.StageComparison("vocoder", stats("vocoder", a), stats("vocoder", b))
    assert row.verdict == verdict
    assert row.delta("p50") == pytest.approx((row.b.stat("p50") - row.a.stat("p50"))
                                             / row.a.stat("p50"))


def test_compare_a_stage_only_one_side_has() -> None:
    row = rep.StageComparison("asr_transcribe", stats("asr_transcribe", [1.0] * 9), None)
    assert row.verdict == "too few samples" and row.delta("p50") is None and row.p_value is None


@pytest.mark.zipkin
def test_report_compare_prints_both_sides_per_stage(zipkin, tmp_path) -> None:
    service = f"compare-{secrets.token_hex(3)}"
    post(zipkin, synthetic_traces(service, "1.0", [100 + 5 * i for i in range(12)])
         + synthetic_traces(service, "1.1", [300 + 5 * i for i in range(12)]))
    assert wait_until(lambda: len(zipkin.client().traces(service=service, lookback_ms=600_000,
                                                          limit=100)) == 24)
    args = ("report", "--zipkin", zipkin.base_url, "--service", service,
            "--compare", "service.version=1.0", "--compare", "service.version=1.1")
    text = run_cli(*args)
    assert text.returncode == 0, text.stderr
    assert "A=1.0 (12 requests) vs B=1.1 (12 requests)" in text.stdout
    vocoder = next(line for line in text.stdout.splitlines() if line.startswith("vocoder "))
    assert "125.0 ms /" in vocoder and "325.0 ms /" in vocoder  # p50 nearest rank, both sides
    assert vocoder.rstrip().endswith("slower")
    html = tmp_path / "compare.html"
    data = json.loads(run_cli(*args, "--json", "--html", str(html)).stdout)
    stage = data["stages"]["vocoder"]
    assert stage["a"]["count"] == stage["b"]["count"] == 12
    assert stage["verdict"] == "slower" and stage["delta_p50"] > 1.0
    page = html.read_text()
    assert "A 1.0" in page and "B 1.1" in page and rep.COLORS[1] in page
    bad = run_cli("report", "--zipkin", zipkin.base_url, "--compare", "service.version=1.0")
    assert bad.returncode == 2 and "two sides of the same key" in bad.stderr
    absent = run_cli(*args[:-1], "service.version=9.9")
    assert absent.returncode == 1 and "no requests with service.version=9.9" in absent.stderr


def prompt_wav(noise: float) -> bytes:
    """Speech-like bursts with pauses, and noise at the given level (the SNR goes down)."""
    import io
    import math
    import wave

    import numpy as np

    rng = np.random.default_rng(7)
    t = np.arange(32000) / 16000
    x = 0.3 * np.sin(2 * math.pi * 220 * t) * ((t * 3).astype(int) % 2 == 0)
    x = np.clip(x + noise * rng.standard_normal(t.size), -1, 0.999)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return out.getvalue()


@pytest.mark.zipkin
def test_report_by_snr_and_errors_triage_on_the_real_zipkin(zipkin, launch_app,
                                                            make_model) -> None:
    running = start_app(launch_app, zipkin, make_model(3), "server")
    sent = []
    for noise in (0.0, 0.001, 0.003, 0.01, 0.03, 0.1):
        trace_id = new_trace_id()
        resp = requests.post(f"{running.url}/inference_zero_shot", timeout=60,
                             headers={"b3": f"{trace_id}-{new_span_id()}-1"},
                             data={"tts_text": "Hello there.", "prompt_text": "some words"},
                             files={"prompt_wav": ("p.wav", prompt_wav(noise))})
        assert resp.status_code == 200
        sent.append(trace_id)
    bad = new_trace_id()  # over the seed's 200 characters: text_too_long, with a noisy prompt
    requests.post(f"{running.url}/inference_zero_shot", timeout=60,
                  headers={"b3": f"{bad}-{new_span_id()}-1"},
                  data={"tts_text": "A sentence that is far too long. " * 8,
                        "prompt_text": "some words"},
                  files={"prompt_wav": ("p.wav", prompt_wav(0.2))})
    client = zipkin.client()
    for trace_id in [*sent, bad]:
        assert client.wait_for_trace(trace_id, lambda sp: any(
            s_.get("name") == "cosyvoice.inference" for s_ in sp), timeout=60)
    by = run_cli("report", "--zipkin", zipkin.base_url, "--service", running.service,
                 "--include-warmup", "--by", "audio.snr_db", "--json")
    assert by.returncode == 0, by.stderr
    groups = json.loads(by.stdout)
    ranges = [key for key in groups if key.startswith("[")]
    assert len(ranges) == 5 and sum(groups[k]["requests"] for k in ranges) == 7
    errors = run_cli("report", "--zipkin", zipkin.base_url, "--service", running.service,
                     "--errors", "text_too_long", "--json")
    assert errors.returncode == 0, errors.stderr
    (row,) = json.loads(errors.stdout)
    assert row["trace_id"] == bad and row["reasons"] == ["text_too_long"]
    assert float(row["audio"]["audio.snr_db"]) < 20  # the noisy prompt, next to its failure
    assert row["link"].endswith(f"/zipkin/traces/{bad}")
    text = run_cli("report", "--zipkin", zipkin.base_url, "--service", running.service,
                   "--errors")
    assert "failing requests: 1" in text.stdout and bad in text.stdout
