"""Every Gradio handler kind (sync, async, generator, batched) gives one trace per request,
on Gradio 5.4.0 and 6.x, read back from the real Zipkin."""

from __future__ import annotations

import os
import time

import pytest

from cosyvoice_otel import schema
from cosyvoice_otel.tools.checks import check_synthesis
from cosyvoice_otel.tools.gradio_rest import GradioRest

from ..support.helpers import app_env, free_port, new_trace_id, run_parallel, unavailable
from .test_gradio import VENVS, trace_headers

pytestmark = pytest.mark.zipkin


@pytest.fixture(params=sorted(VENVS))
def handlers_app(request, zipkin, launch_app, make_model):
    bin_dir = VENVS[request.param] / "bin"
    if not (bin_dir / "cosyvoice-traced").exists():
        unavailable(f"{VENVS[request.param]} is missing (.ci/setup creates it)",
                    f"{VENVS[request.param]} is missing")
    port = free_port()
    env = app_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return launch_app([str(bin_dir / "cosyvoice-traced"), "run", "--zipkin-endpoint",
                       zipkin.endpoint, "--service-name", f"handlers-{request.param}", "--",
                       "python", "tests/support/apps/gradio_handlers.py", "--port", str(port),
                       "--model_dir", str(make_model(3))], env, port)


@pytest.mark.parametrize("api", ["sync", "async", "stream"])
def test_each_handler_kind_gives_one_complete_trace(zipkin, handlers_app, api) -> None:
    trace_id = new_trace_id()
    output = GradioRest(handlers_app.url, headers=trace_headers("b3single", trace_id)).call(
        api, ["Hello from a handler. 第二句。"])
    assert output and output[0]
    spans = zipkin.client().wait_for_trace(
        trace_id, lambda sp: not check_synthesis(sp, "sft", api == "stream"), timeout=30)
    assert check_synthesis(spans, "sft", api == "stream") == []
    event = [s for s in spans if s["name"] == schema.GRADIO_EVENT]
    assert len(event) == 1 and event[0]["tags"][schema.GRADIO_FN] == api


def test_a_batched_run_is_parented_by_the_first_event_and_names_the_others(
        zipkin, handlers_app) -> None:
    ids = [new_trace_id() for _ in range(4)]
    run_parallel([lambda t=t: GradioRest(handlers_app.url, headers=trace_headers("w3c", t)).call(
        "batch", [f"Batch member {ids.index(t)}."]) for t in ids])
    client = zipkin.client()

    def runs_now() -> dict[str, tuple[dict, list[dict]]]:
        found = {}
        for trace_id in ids:
            spans = client.trace(trace_id)
            for event in (s for s in spans if s["name"] == schema.GRADIO_EVENT):
                found[trace_id] = (event, spans)
        return found

    def served_by(runs: dict) -> set[str]:
        served = set(runs)
        for event, _ in runs.values():
            served |= {t for t in event["tags"].get(schema.BATCH_TRACE_IDS, "").split(",") if t}
        return served

    deadline = time.monotonic() + 30
    runs = runs_now()
    while served_by(runs) != set(ids) and time.monotonic() < deadline:
        time.sleep(0.5)
        runs = runs_now()
    # every request was served by a run, each run lives in the trace of its first event, holds
    # one inference per batch member, and names the other members' traces
    assert served_by(runs) == set(ids)
    for trace_id, (event, _) in runs.items():
        size = int(event["tags"][schema.BATCH_SIZE])
        others = [t for t in event["tags"].get(schema.BATCH_TRACE_IDS, "").split(",") if t]
        assert len(others) == size - 1
        spans = client.wait_for_trace(trace_id, lambda sp, n=size: sum(
            s["name"] == schema.INFERENCE for s in sp) >= n, timeout=30)
        assert sum(s["name"] == schema.INFERENCE for s in spans) == size
    assert any(int(e["tags"][schema.BATCH_SIZE]) > 1 for e, _ in runs.values()), \
        "no batch formed: the test did not exercise batching"
