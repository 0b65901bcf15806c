"""The stage map: WHAT to trace, as data (target, span name, attribute extractor, fixed attributes).

A row names ``module:Class.method`` (or ``module:function``), the span it becomes, and the
extractor (see ``extractors.py``) that reads sizes and counts from the call. The built-in
profile ``cosyvoice`` targets upstream CosyVoice's real module paths; the demo engine in
``examples/`` lives under the same names, so one map traces both.

Extending without code:

* ``--stage NAME=module:Class.method`` (repeatable; ``COSYVOICE_TRACED_STAGE`` takes a
  ``;``-separated list), or
* ``--stage-map FILE`` with TOML rows::

      [[stage]]
      target = "myfork.engine:Engine.vocode"
      span = "vocoder"
      extractor = "vocoder"          # optional, default "none"
      attributes = { backend = "trt" }  # optional fixed attributes
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import schema as s


class StageMapError(ValueError):
    """A stage row or file is malformed; the message names it."""


@dataclass(frozen=True)
class Stage:
    module: str
    qualname: str  # "Class.method" or "function"
    span: str
    extractor: str = "none"
    attributes: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def target(self) -> str:
        return f"{self.module}:{self.qualname}"


def _row(target: str, span: str, extractor: str = "none", **attributes: Any) -> Stage:
    module, _, qualname = target.partition(":")
    return Stage(module, qualname, span, extractor, tuple(attributes.items()))


_CLI = "cosyvoice.cli.cosyvoice"
_FE = "cosyvoice.cli.frontend:CosyVoiceFrontEnd"
_MODEL = "cosyvoice.cli.model"


def _cosyvoice_profile() -> tuple[Stage, ...]:
    rows: list[Stage] = []
    # the public API, per class (a method inherited from a patched base is not wrapped twice)
    for cls, modes in (("CosyVoice", ("sft", "zero_shot", "cross_lingual", "instruct", "vc")),
                       ("CosyVoice2", ("instruct2",)), ("CosyVoice3", ())):
        for mode in modes:
            rows.append(_row(f"{_CLI}:{cls}.inference_{mode}", s.INFERENCE, "inference",
                             **{s.MODE: mode}))
    rows.append(_row(f"{_FE}.text_normalize", s.TEXT_NORMALIZE, "text_normalize"))
    for mode in s.MODES:
        rows.append(_row(f"{_FE}.frontend_{mode}", f"tts_frontend.{mode}", "frontend",
                         **{s.MODE: mode}))
    for method, span in (("_extract_speech_token", "audio_preprocess.speech_tokenizer"),
                         ("_extract_spk_embedding", "audio_preprocess.speaker_embedding"),
                         ("_extract_speech_feat", "audio_preprocess.speech_feat")):
        rows.append(_row(f"{_FE}.{method}", span, "audio"))
    for cls in ("CosyVoiceModel", "CosyVoice2Model", "CosyVoice3Model"):
        rows.append(_row(f"{_MODEL}:{cls}.tts", s.MODEL_TTS, "model_tts"))
        rows.append(_row(f"{_MODEL}:{cls}.token2wav", s.TOKEN2WAV, "token2wav"))
    for cls in ("TransformerLM", "Qwen2LM"):
        rows.append(_row(f"cosyvoice.llm.llm:{cls}.inference", s.ACOUSTIC_MODEL, "acoustic"))
    for cls in ("MaskedDiffWithXvec", "CausalMaskedDiffWithXvec"):
        rows.append(_row(f"cosyvoice.flow.flow:{cls}.inference", s.FLOW, "flow"))
    rows.append(_row("cosyvoice.hifigan.generator:HiFTGenerator.inference", s.VOCODER, "vocoder"))
    # ASR: FunASR when the app uses it, and the demo engine's own transcriber
    rows.append(_row("funasr:AutoModel.generate", s.ASR, "asr"))
    rows.append(_row("cosyvoice.utils.asr:TinyTranscriber.generate", s.ASR, "asr"))
    return tuple(rows)


PROFILES: dict[str, tuple[Stage, ...]] = {"cosyvoice": _cosyvoice_profile()}

# Targets that may legitimately be absent (another CosyVoice version, an optional library):
# their absence is logged at debug level, not as a warning.
OPTIONAL_MODULES = frozenset({"funasr", "cosyvoice.utils.asr"})

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$")


def parse_stage_spec(spec: str) -> Stage:
    """``NAME=module:Class.method`` -> a Stage (extractor none)."""
    name, sep, target = spec.strip().partition("=")
    if not sep or not name.strip() or not _TARGET.match(target.strip()):
        raise StageMapError(f"bad stage {spec!r}: expected NAME=module:Class.method")
    return _row(target.strip(), name.strip())


def parse_stage_specs(text: str) -> tuple[Stage, ...]:
    return tuple(parse_stage_spec(part) for part in text.split(";") if part.strip())


def load_stage_file(path: str) -> tuple[Stage, ...]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    from .extractors import EXTRACTORS

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StageMapError(f"stage map {path}: {exc}") from None
    rows = []
    for i, item in enumerate(data.get("stage", [])):
        where = f"stage map {path}, stage #{i + 1}"
        target, span = item.get("target", ""), item.get("span", "")
        if not isinstance(target, str) or not _TARGET.match(target):
            raise StageMapError(f"{where}: target must be module:Class.method, got {target!r}")
        if not isinstance(span, str) or not span:
            raise StageMapError(f"{where}: span must be a non-empty string")
        extractor = item.get("extractor", "none")
        if extractor not in EXTRACTORS:
            raise StageMapError(f"{where}: unknown extractor {extractor!r}; "
                                f"known: {', '.join(sorted(EXTRACTORS))}")
        attributes = item.get("attributes", {})
        if not isinstance(attributes, dict):
            raise StageMapError(f"{where}: attributes must be a table")
        rows.append(_row(target, span, extractor, **attributes))
    if not rows:
        raise StageMapError(f"stage map {path}: no [[stage]] rows")
    return tuple(rows)


def build(profile: str = "cosyvoice", extra: Iterable[Stage] = ()) -> tuple[Stage, ...]:
    """The built-in profile plus user rows; a user row for the same target replaces the built-in."""
    rows = {stage.target: stage for stage in PROFILES[profile]}
    for stage in extra:
        rows[stage.target] = stage
    return tuple(rows.values())
