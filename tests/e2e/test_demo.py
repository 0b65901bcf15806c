"""`cosyvoice-traced demo`, the README's main job: against a Zipkin, and without Java."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from ..support.helpers import BIN, ROOT, app_env, free_port


def run_demo(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "cosyvoice-traced"), "demo", "--port", str(free_port()),
                           *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


@pytest.mark.zipkin
def test_demo_prints_the_stage_tree_and_the_zipkin_link(zipkin, tmp_path) -> None:
    result = run_demo("--zipkin-endpoint", zipkin.endpoint, "--model-dir",
                      str(tmp_path / "model"), env=app_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr + result.stdout
    link = re.search(r"open it in Zipkin: (\S+/zipkin/traces/([0-9a-f]{32}))", result.stdout)
    assert link, result.stdout
    wanted = {"gradio.event", "cosyvoice.inference", "acoustic_model", "vocoder"}
    spans = zipkin.client().wait_for_trace(  # Zipkin stores batches as they come: poll
        link.group(2), lambda got: wanted <= {s["name"] for s in got}, timeout=20)
    assert wanted <= {s["name"] for s in spans}
    for stage in ("gradio.event", "cosyvoice.inference", "model.tts", "vocoder"):
        assert stage in result.stdout


def test_demo_without_java_writes_zipkin_json(tmp_path) -> None:
    # a PATH with the venv but no java (and no ffmpeg: the UI falls back to whole clips)
    env = app_env(PATH=str(BIN), COSYVOICE_TRACED_CACHE=str(tmp_path / "cache"))
    result = run_demo("--model-dir", str(tmp_path / "model"), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Upload JSON" in result.stdout
    spans = json.loads((tmp_path / "cosyvoice-demo-trace.json").read_text())
    names = {s["name"] for s in spans}
    assert {"cosyvoice.inference", "acoustic_model", "vocoder"} <= names
    trace_id = re.search(r"trace ([0-9a-f]{32}) written", result.stdout).group(1)
    assert any(s["traceId"] == trace_id and s["name"] == "gradio.event" for s in spans)
