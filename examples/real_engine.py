"""Load upstream CosyVoice's REAL engine (not our demo engine) for the example apps and tests.

    from real_engine import load
    cosyvoice = load("/path/to/model_dir")      # CosyVoice, CosyVoice2 (or CosyVoice3)

Which code runs: the ``cosyvoice`` package installed in the environment (``.venv-cosyvoice``:
PyPI's ``cosyvoice-minicpmo``, upstream's CosyVoice/CosyVoice2 package), or an upstream checkout
put first on ``PYTHONPATH`` (``COSYVOICE_UPSTREAM``: the newest code, CosyVoice3 included). This
folder's own ``cosyvoice`` (the demo engine) is kept out of the way.

One host duty, as in the package's own users: PyPI's package is MiniCPM-o's build of upstream,
whose ``CosyVoice2`` leaves the LLM to the host (``CosyVoice2Model(None, flow, hift)``): its
host supplies the speech-token LLM. This loader does what such a host does: it builds the LLM
the model's ``cosyvoice2.yaml`` names (upstream's ``Qwen2LM``), loads ``llm.pt`` into it and
gives it to the model, whose own ``llm_job`` then runs it. The package's code is not changed.

Also a property of that package: it ships without text normalisation (``text_normalize`` with
``text_frontend=True`` fails on a missing attribute), so callers pass ``text_frontend=False``
(``TEXT_FRONTEND``); upstream's checkout normalises.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def use_real_package() -> None:
    """Make ``import cosyvoice`` find the real engine: not this folder's demo engine; an
    upstream checkout first when ``COSYVOICE_UPSTREAM`` names one (with its Matcha-TTS)."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    checkout = os.environ.get("COSYVOICE_UPSTREAM")
    if checkout:
        for extra in (Path(checkout), Path(checkout) / "third_party" / "Matcha-TTS"):
            if str(extra) not in sys.path:
                sys.path.insert(0, str(extra))
    demo = sys.modules.get("cosyvoice")
    if demo is not None and Path(getattr(demo, "__file__", "") or "").resolve().is_relative_to(
            _HERE):
        raise RuntimeError("the demo engine is already imported; load the real one first")


def text_frontend() -> bool:
    """Whether the loaded package normalises text (PyPI's build does not)."""
    from cosyvoice.cli.frontend import CosyVoiceFrontEnd

    return "use_ttsfrd" in CosyVoiceFrontEnd.__init__.__code__.co_names or bool(
        os.environ.get("COSYVOICE_UPSTREAM"))


def _supply_llm(api: Any, model_dir: str) -> None:
    import torch
    from hyperpyyaml import load_hyperpyyaml

    with open(os.path.join(model_dir, "cosyvoice2.yaml"), encoding="utf-8") as f:
        configs = load_hyperpyyaml(f, overrides={
            "qwen_pretrain_path": os.path.join(model_dir, "CosyVoice-BlankEN")})
    llm = configs["llm"]
    llm.load_state_dict(torch.load(os.path.join(model_dir, "llm.pt"), map_location="cpu"),
                        strict=True)
    api.model.llm = llm.to(api.model.device).eval()


def load(model_dir: str) -> Any:
    """The real engine for ``model_dir`` (chosen by its ``cosyvoice*.yaml``, as upstream's
    ``AutoModel`` does)."""
    use_real_package()
    import cosyvoice.cli.cosyvoice as api_module

    auto = getattr(api_module, "AutoModel", None)
    if auto is not None:  # an upstream checkout: its own choice of class
        api = auto(model_dir=model_dir)
    elif os.path.exists(os.path.join(model_dir, "cosyvoice2.yaml")):
        api = api_module.CosyVoice2(model_dir)
    else:
        api = api_module.CosyVoice(model_dir)
    if os.path.exists(os.path.join(model_dir, "cosyvoice2.yaml")) and getattr(
            api.model, "llm", None) is None:
        _supply_llm(api, model_dir)
    return api
