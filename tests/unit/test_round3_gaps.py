"""The third generated-mutant batch's survivors (issue 31, seed 31207, 2026-12-07): each a
promise no test held, now one test each."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from cosyvoice_otel.instrumentation import audio_figures, routes
from cosyvoice_otel.instrumentation.instrumentor import CosyVoiceInstrumentor, Patch


def test_a_prompt_tensor_with_channels_inside_a_batch_is_their_mean_not_their_sum() -> None:
    import torch

    samples = 16000
    tone = np.sin(np.linspace(0, 200 * np.pi, samples)).astype(np.float32) * 0.5
    # (1, 2, n): a batch of one with a voiced and a silent channel: heard as their mean (the
    # tone at half level), never as the two channels played one after the other
    both = torch.tensor(np.stack([tone, np.zeros_like(tone)]))[None]
    assert audio_figures.measure(both) == audio_figures.measure(torch.tensor(tone * 0.5)[None])


def test_a_missing_patch_table_target_warns_with_what_it_means(caplog) -> None:
    instrumentor = object.__new__(CosyVoiceInstrumentor)
    instrumentor._warned = set()
    patch = Patch("gradio.queueing", "Queue.no_such_method", lambda tracer, enabled: None,
                  "", missing="the queue wait will not be measured")
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        instrumentor._apply(types.SimpleNamespace(Queue=type("Queue", (), {})), patch)
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: stage target gradio.queueing:Queue.no_such_method not found; "
        "the queue wait will not be measured"]


def test_a_routes_declared_query_parameters_are_read_from_its_dependant() -> None:
    param = types.SimpleNamespace(name="speed", alias=None)
    aliased = types.SimpleNamespace(name="spk", alias="speaker")
    route = types.SimpleNamespace(dependant=types.SimpleNamespace(query_params=[param, aliased]))
    assert routes.declared_query_names(route) == ["speed", "speaker"]
    assert routes.declared_query_names(types.SimpleNamespace()) == []


def test_the_background_probe_warns_on_stderr_and_holds_no_pipe_on_stdout() -> None:
    code = ("from cosyvoice_otel.launcher.launcher import check_endpoint_in_background\n"
            "check_endpoint_in_background('http://127.0.0.1:9/api/v2/spans')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # returns once both pipes close: the grandchild's too
    assert done.stdout == ""
    assert "did not answer" in done.stderr


def test_fastapi_loads_with_the_defaults_when_the_settings_cannot_be_read(monkeypatch,
                                                                         caplog) -> None:
    from cosyvoice_otel.sdk import distro

    def unreadable():
        raise ValueError("bad COSYVOICE_TRACED_HTTP_IO_SPANS")

    monkeypatch.setattr(distro, "current", unreadable)
    loaded = {}

    class EntryPoint:
        name = "fastapi"

        def load(self):
            class Instrumentor:
                def instrument(self, **kwargs):
                    loaded.update(kwargs)

            return Instrumentor

    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        distro.CosyVoiceDistro().load_instrumentor(EntryPoint(), skip_dep_check=True)
    assert "exclude_spans" not in loaded and loaded  # loaded all the same
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: fastapi options not applied (bad COSYVOICE_TRACED_HTTP_IO_SPANS)"]


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    from cosyvoice_otel.sdk.id_generator import IsolatedRandomIdGenerator

    ids = IsolatedRandomIdGenerator()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child (a server's worker): its first id, to the parent
        try:
            os.write(write, str(ids.generate_trace_id()).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = int(os.read(read, 100))
    os.waitpid(pid, 0)
    os.close(read)
    assert child_id != ids.generate_trace_id()  # the same state would draw the same id


def test_no_meter_provider_without_a_reader(process_settings) -> None:
    from cosyvoice_otel.sdk.meter import build_meter_provider

    assert build_meter_provider(process_settings({}), None) is None


@pytest.mark.parametrize(("table", "name"), [("declare", "Bad Name!"), ("reason", "has space")])
def test_a_declared_name_is_checked_like_any_stage_or_reason(tmp_path, table, name) -> None:
    from cosyvoice_otel import stage_rows

    key = "span" if table == "declare" else "name"
    path = tmp_path / "stages.toml"
    path.write_text(f'[[{table}]]\n{key} = "{name}"\nmeaning = "x"\n', encoding="utf-8")
    with pytest.raises(stage_rows.StageMapError, match=f"{table} #1: "):
        stage_rows.stage_source(str(path))


def test_report_lists_the_slowest_requests_first() -> None:
    from cosyvoice_otel import schema as s
    from cosyvoice_otel.tools import report as rep

    traces = [[{"traceId": f"{i:032x}", "id": "1", "name": s.INFERENCE, "timestamp": 1,
                "duration": duration, "tags": {s.MODE: "sft"}}]
              for i, duration in enumerate((300, 900, 100, 600), start=1)]
    group = rep.analyse(traces)["all"]
    assert [duration for duration, _ in group.requests] == [900, 600, 300, 100]


def test_verify_takes_a_bad_inputs_trace_as_ready_once_it_has_the_error() -> None:
    from cosyvoice_otel import schema as s
    from cosyvoice_otel.tools import verify

    bad = verify.Sent("a" * 32, "b3multi", "sft", False, "CANARY", bad=True)
    ready = verify._ready(bad)
    failed = [{"name": s.INFERENCE, "tags": {"error": "text_too_long"}}]
    assert ready(failed) is True  # no synthesis stages expected of a refused input
    assert ready([{"name": s.INFERENCE, "tags": {}}]) is False
    assert ready([{"name": "post", "tags": {"error": "x"}}]) is False
