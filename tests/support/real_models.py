"""Upstream CosyVoice's tiny random-weights models for the real-engine tests, built once.

    .venv/bin/python -m tests.support.real_models     # .ci/setup: build what is missing

Building them takes half a minute of the machine's two cores (three models, each a Python
that imports torch and transformers) for the same bytes every run, so they are kept in the
cache under a key made of what builds them: ``examples/make_real_model.py``, the engine module
it imports, the real engine's pins, the arguments and, for v3, the upstream checkout. A change
to any of them builds anew. A run that finds a model missing builds it, one process at a time
(a file lock: the xdist workers may ask together); a model appears whole (built aside, renamed).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cosyvoice_otel.settings import cache_dir

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-cosyvoice" / "bin" / "python"
# key: (folder name the loader reads the version from, make_real_model.py's arguments); ``1`` is
# named -Instruct so upstream turns instruct mode on, ``fill``'s LLM emits the fill token that
# streamed text input needs
MODELS = {"1": ("tiny-CosyVoice-300M-Instruct", ["--version", "1"]),
          "2": ("tiny-CosyVoice2", ["--version", "2"]),
          "fill": ("tiny-CosyVoice2", ["--version", "2", "--fill-tokens"]),
          "3": ("tiny-CosyVoice3", ["--version", "3"])}
BUILDER_INPUTS = ("examples/make_real_model.py", "examples/real_engine.py", ".ci/real-engine.txt")


def wanted() -> list[str]:
    """v1, v2 and the fill model; v3 only with an upstream checkout (``COSYVOICE_UPSTREAM``)."""
    return ["1", "2", "fill", "3"] if os.environ.get("COSYVOICE_UPSTREAM") else ["1", "2", "fill"]


def model_key(which: str) -> str:
    digest = hashlib.sha256()
    for name in BUILDER_INPUTS:
        digest.update((ROOT / name).read_bytes())
    digest.update(repr(MODELS[which]).encode())
    if which == "3":
        digest.update(os.environ.get("COSYVOICE_UPSTREAM", "").encode())
    return digest.hexdigest()[:16]


def model_path(which: str) -> Path:
    folder, _ = MODELS[which]
    return Path(cache_dir()) / "real-models" / f"{which}-{model_key(which)}" / folder


def ensure(which: list[str]) -> dict[str, Path]:
    """{key: model directory}, building the missing ones in parallel. Raises RuntimeError with
    the builder's output when one fails."""
    paths = {key: model_path(key) for key in which}
    root = Path(cache_dir()) / "real-models"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others find it built
        missing = {key: path for key, path in paths.items() if not path.is_dir()}
        builds = {}
        for key, path in missing.items():
            aside = path.parent.with_name(path.parent.name + ".building")
            shutil.rmtree(aside, ignore_errors=True)
            builds[key] = (aside, subprocess.Popen(
                [str(PYTHON), "examples/make_real_model.py", str(aside / path.name),
                 *MODELS[key][1]], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        failed = []
        for key, (aside, build) in builds.items():
            out, _ = build.communicate(timeout=600)
            if build.returncode:
                failed.append(f"model {key}: {out.decode(errors='replace')[-3000:]}")
            else:
                aside.rename(paths[key].parent)
        if failed:
            raise RuntimeError("\n".join(failed))
        # older keys' models: nothing reads them any more
        current = {path.parent.name for path in paths.values()}
        for old in root.iterdir():
            if old.is_dir() and old.name.split("-")[0] in which and old.name not in current:
                shutil.rmtree(old, ignore_errors=True)
    return paths


if __name__ == "__main__":
    if not PYTHON.exists():
        sys.exit("real_models: .venv-cosyvoice is missing (.ci/setup makes it first)")
    for key, path in ensure(wanted()).items():
        print(f"real model {key}: {path}")
