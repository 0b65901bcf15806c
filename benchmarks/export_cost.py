"""Export-thread cost per span: redaction + Zipkin JSON encoding, this tree vs another commit.

    .venv/bin/python benchmarks/export_cost.py [--against REV] [--batches 40] [--rounds 7]
    .venv/bin/python benchmarks/export_cost.py --zipkin [--batches 40]
    .venv/bin/python benchmarks/export_cost.py --kafka [--batches 40]

Builds batches of 512 spans shaped like the demo's traces (a SERVER span with a URL and a
user agent, stage spans with numeric attributes, one exception event quoting the text, the
request's text registered for masking) and times what the export thread does with them before
the HTTP post. With ``--against REV`` the same batches are timed with that commit's code (a
``git worktree``, imported through PYTHONPATH in a child process), rounds interleaved, and the
ratio printed. ``--zipkin`` instead starts the real Zipkin and times its answers to 512-span
batches posted by the resilient exporter (what ``--export-timeout`` must fit) and the
end-to-end spans/s of one process. Up to issue 15 the exporter encoded, parsed back to
redact, and encoded again; since, redaction works on the span objects and the batch is
encoded once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, time
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from cosyvoice_otel.sdk import redaction

batches_n = int(sys.argv[1])
memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
provider.add_span_processor(SimpleSpanProcessor(memory))
ours, http = provider.get_tracer("cosyvoice_otel"), provider.get_tracer("asgi")
text = "Hello, this is the text the user asked to speak, 你好世界."
while len(memory.get_finished_spans()) < 512 * batches_n:
    with http.start_as_current_span("GET /inference_sft", kind=SpanKind.SERVER) as server:
        server.set_attributes({"http.target": "/inference_sft?tts_text=Hello&spk_id=a",
                               "http.route": "/inference_sft", "http.method": "GET",
                               "http.user_agent": "python-requests/2.32", "http.status_code": 200})
        masking.remember(server.get_span_context().trace_id, [text])
        for name in ("cosyvoice.inference", "tts_frontend.text_normalize", "model.tts",
                     "acoustic_model", "token2wav", "flow", "vocoder") * 3:
            with ours.start_as_current_span(name) as span:
                span.set_attributes({"cosyvoice.mode": "sft", "cosyvoice.chunk.index": 1,
                                     "cosyvoice.rtf": 0.01, "cosyvoice.stream": False})
        server.add_event("exception", {"exception.type": "ValueError",
                                       "exception.message": f"bad text {text!r}"})
spans = list(memory.get_finished_spans())
batches = [spans[i * 512:(i + 1) * 512] for i in range(batches_n)]
try:
    from cosyvoice_otel.sdk.redaction import RedactingSpanExporter
    from cosyvoice_otel.sdk.zipkin_json import ZipkinJsonEncoder
    encoder = ZipkinJsonEncoder()
    out = []

    class Sink:
        def export(self, redacted):
            out.append(encoder.encode(redacted))

    layer = RedactingSpanExporter(Sink())
    work = layer.export
except ImportError:  # before issue 15: the exporter redacted while encoding
    from cosyvoice_otel.sdk.zipkin_http import ResilientZipkinExporter
    exporter = ResilientZipkinExporter(endpoint="http://127.0.0.1:9/api/v2/spans",
                                       spool_dir=sys.argv[2])
    work = exporter.encode
work(batches[0])  # warm caches (compiled masking patterns, imports)
started = time.perf_counter()
for batch in batches:
    work(batch)
print(json.dumps({"us_per_span": (time.perf_counter() - started) / len(spans) * 1e6}))
"""


def measure(pythonpath: Path, batches: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    with tempfile.TemporaryDirectory() as spool:
        out = subprocess.run([sys.executable, "-c", CHILD, str(batches), spool], env=env,
                             capture_output=True, text=True, check=True, cwd=pythonpath)
    return json.loads(out.stdout.strip().splitlines()[-1])["us_per_span"]


ZIPKIN_CHILD = r"""
import json, sys, time
from cosyvoice_otel.sdk.zipkin_http import ResilientZipkinExporter
from cosyvoice_otel.sdk.redaction import RedactingSpanExporter
# pipelined, as the configurator builds it: encode the next batch while Zipkin takes this one
exporter = ResilientZipkinExporter(endpoint=sys.argv[3], spool_dir=sys.argv[2],
                                   pipelined=sys.argv[4] == "1")
answers = []
post = exporter._post
def timed(payload):
    started = time.perf_counter()
    outcome = post(payload)
    answers.append(time.perf_counter() - started)
    return outcome
exporter._post = timed
layer = RedactingSpanExporter(exporter)
layer.export(batches[0])
exporter.force_flush()
answers.clear()
started = time.perf_counter()
for batch in batches:
    layer.export(batch)
exporter.force_flush()
elapsed = time.perf_counter() - started
answers.sort()
print(json.dumps({"spans_per_s": len(spans) / elapsed, "answer_p50_ms": answers[len(answers) // 2] * 1e3,
                  "answer_max_ms": answers[-1] * 1e3, "sent": exporter.counters["sent"]}))
"""


KAFKA_CHILD = r"""
import json, sys, time
from cosyvoice_otel.sdk.kafka_exporter import KafkaZipkinExporter
from cosyvoice_otel.sdk.redaction import RedactingSpanExporter
exporter = KafkaZipkinExporter(sys.argv[3], "zipkin", sys.argv[2], 64 * 1024 * 1024)
layer = RedactingSpanExporter(exporter)
layer.export(batches[0])
exporter.force_flush()
started = time.perf_counter()
for batch in batches:
    layer.export(batch)
exporter.force_flush(60000)
elapsed = time.perf_counter() - started
print(json.dumps({"spans_per_s": len(spans) / elapsed, "sent": exporter.counters["sent"]}))
exporter.shutdown()
"""


def kafka_run(batches: int, rounds: int) -> None:
    """The same batches published to a real Kafka broker (KRaft, tests/kafka_server.py)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.kafka_server import KafkaBroker

    broker = KafkaBroker()
    rates = []
    try:
        child = CHILD.split("work(batches[0])")[0] + KAFKA_CHILD
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as spool:
                out = subprocess.run([sys.executable, "-c", child, str(batches), spool,
                                      broker.bootstrap], capture_output=True, text=True,
                                     check=True, cwd=ROOT,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
            rates.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        broker.stop()
    print(f"{batches} batches of 512 spans to a real Kafka broker (redact + encode + produce + "
          f"delivery reports, one process), {rounds} rounds: median "
          f"{statistics.median(r['spans_per_s'] for r in rates):,.0f} spans/s; delivered "
          f"{min(r['sent'] for r in rates)} of {(batches + 1) * 512} per run (with the warm-up "
          "batch)")


def zipkin_run(batches: int, rounds: int) -> None:
    from cosyvoice_otel.tools import zipkin_server

    # a heap for the volume (the fixtures' 256 MiB fills with in-memory spans and stalls)
    server = zipkin_server.start(heap="1g")
    results: dict[str, list[dict]] = {"pipelined": [], "serial": []}
    try:
        child = CHILD.split("work(batches[0])")[0] + ZIPKIN_CHILD
        for _ in range(rounds):  # interleaved: Zipkin's JIT warms up for both alike
            for mode in results:
                with tempfile.TemporaryDirectory() as spool:
                    out = subprocess.run(
                        [sys.executable, "-c", child, str(batches), spool, server.endpoint,
                         "1" if mode == "pipelined" else "0"], capture_output=True, text=True,
                        check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
                results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.stop()
    print(f"{batches} batches of 512 spans to the real Zipkin (redact + encode + POST, one "
          f"process), {rounds} interleaved rounds, median:")
    for mode, runs in results.items():
        rate = statistics.median(r["spans_per_s"] for r in runs)
        answer = statistics.median(r["answer_p50_ms"] for r in runs)
        print(f"  {mode:>9}: {rate:9,.0f} spans/s; Zipkin's answer median {answer:.1f} ms "
              f"(max {max(r['answer_max_ms'] for r in runs):.1f} ms); accepted "
              f"{min(r['sent'] for r in runs)} of {(batches + 1) * 512} per run (with the warm-up "
              "batch)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zipkin", action="store_true", help="time the real Zipkin's answers")
    parser.add_argument("--kafka", action="store_true", help="publish to a real Kafka broker")
    parser.add_argument("--against", help="a commit to compare with (e.g. 466126f)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.zipkin:
        zipkin_run(args.batches, args.rounds)
        return
    if args.kafka:
        kafka_run(args.batches, args.rounds)
        return
    trees = {"this tree": ROOT}
    worktree = None
    if args.against:
        worktree = Path(tempfile.mkdtemp(prefix="export-cost-"))
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.against],
                       cwd=ROOT, check=True, capture_output=True)
        trees[args.against] = worktree
    try:
        times: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                times[name].append(measure(tree, args.batches))
        base = statistics.median(times["this tree"])
        print(f"{args.batches} batches of 512 spans, {args.rounds} interleaved rounds (median)")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:>12}: {median:7.2f} us/span  ({1e6 / median:9,.0f} spans/s)  "
                  f"ratio {median / base:.2f}")
    finally:
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                           capture_output=True)


if __name__ == "__main__":
    main()
