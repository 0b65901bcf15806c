"""The stage map: WHAT to trace, as data (target, span name, attribute extractor, fixed attributes).

A row names ``module:Class.method`` (or ``module:function``), the span it becomes, and the
extractor (see ``extractors.py``) that reads sizes and counts from the call. The built-in
profile ``cosyvoice`` targets upstream CosyVoice's real module paths; the demo engine in
``examples/`` lives under the same names, so one map traces both.

Class rows alone miss what a model is actually built from: a CosyVoice model's ``llm``, ``flow``
and ``hift`` are whatever classes its ``cosyvoice*.yaml`` names (v3's ``CausalMaskedDiffWithDiT``
inherits from no class of v1/v2; a fork brings its own). So a row also carries ROLES: a role is
a part reached from the instance of that row's call (``path``, e.g. ``model`` then ``flow``) and
the method to trace on whatever class that part has. The instrumentor resolves roles when the
row's method is called (``inference_*`` resolves the frontend and the model; ``model.tts`` the
llm, flow and hift), so a class the map never named, or a part swapped after construction
(``load_vllm``, a fork assigning ``model.hift``), is traced from its first request on.

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

from cosyvoice_otel import schema as s


class StageMapError(ValueError):
    """A stage row or file is malformed; the message names it."""


@dataclass(frozen=True)
class Role:
    """``method`` of the part at ``path`` (attribute names, dotted) of a traced call's instance."""

    path: str
    method: str
    span: str
    extractor: str = "none"
    attributes: tuple[tuple[str, Any], ...] = field(default=())
    roles: tuple[Role, ...] = field(default=())  # resolved in turn from the part's calls
    late_parent: bool = False
    required: bool = True  # a part without the method is a warning (else: debug)

    def stage_for(self, owner: type) -> Stage:
        """The row of the class that defines the method for this part."""
        return Stage(owner.__module__, f"{owner.__qualname__}.{self.method}", self.span,
                     self.extractor, self.attributes, self.roles, self.late_parent)


@dataclass(frozen=True)
class Stage:
    module: str
    qualname: str  # "Class.method" or "function"
    span: str
    extractor: str = "none"
    attributes: tuple[tuple[str, Any], ...] = field(default=())
    roles: tuple[Role, ...] = field(default=())
    # a generator whose span's parent is what is current at its first step, not at its call
    # (the streamed-text generator: made by the frontend, consumed inside the LLM's span)
    late_parent: bool = False
    optional: bool = False  # absent in some CosyVoice versions: debug log, not a warning

    @property
    def target(self) -> str:
        return f"{self.module}:{self.qualname}"


def _row(target: str, span: str, extractor: str = "none", roles: tuple[Role, ...] = (),
         optional: bool = False, **attributes: Any) -> Stage:
    module, _, qualname = target.partition(":")
    return Stage(module, qualname, span, extractor, tuple(attributes.items()), roles,
                 optional=optional)


_CLI = "cosyvoice.cli.cosyvoice"
_FE = "cosyvoice.cli.frontend:CosyVoiceFrontEnd"
_MODEL = "cosyvoice.cli.model"


_AUDIO_STAGES = (("_extract_speech_token", "audio_preprocess.speech_tokenizer"),
                 ("_extract_spk_embedding", "audio_preprocess.speaker_embedding"),
                 ("_extract_speech_feat", "audio_preprocess.speech_feat"))

# The parts of a model runner (``CosyVoiceModel``, ``CosyVoice2Model``, ... or a fork's).
PART_ROLES = (
    Role("llm", "inference", s.ACOUSTIC_MODEL, "acoustic"),
    Role("llm", "inference_bistream", s.ACOUSTIC_MODEL, "acoustic",
         ((s.TEXT_STREAMED, True),), required=False),  # v2/v3 only
    Role("flow", "inference", s.FLOW, "flow"),
    Role("hift", "inference", s.VOCODER, "vocoder"),
)
# The parts of the public API object (``CosyVoice``, ``CosyVoice2``, ``CosyVoice3``, ...).
API_ROLES = (
    Role("frontend", "text_normalize", s.TEXT_NORMALIZE, "text_normalize"),
    *(Role("frontend", f"frontend_{mode}", f"tts_frontend.{mode}", "frontend",
           ((s.MODE, mode),), required=False) for mode in s.MODES),
    *(Role("frontend", method, span, "audio") for method, span in _AUDIO_STAGES),
    Role("frontend", "_extract_text_token_generator", s.TEXT_STREAM, "text_stream",
         late_parent=True, required=False),
    Role("model", "tts", s.MODEL_TTS, "model_tts", roles=PART_ROLES),
    Role("model", "token2wav", s.TOKEN2WAV, "token2wav"),
)


def _cosyvoice_profile() -> tuple[Stage, ...]:
    rows: list[Stage] = []
    # the public API, per class (a method inherited from a patched base is not wrapped twice)
    for cls, modes in (("CosyVoice", ("sft", "zero_shot", "cross_lingual", "instruct", "vc")),
                       ("CosyVoice2", ("instruct2",)), ("CosyVoice3", ())):
        for mode in modes:
            rows.append(_row(f"{_CLI}:{cls}.inference_{mode}", s.INFERENCE, "inference",
                             roles=API_ROLES, **{s.MODE: mode}))
    rows.append(_row(f"{_CLI}:CosyVoice.add_zero_shot_spk", s.SPEAKER_ADD, "speaker_add",
                     roles=API_ROLES))
    # Upstream's own classes, patched at import so a first request does no resolving work.
    # The roles above trace any other class; these rows are a shortcut, not the mechanism.
    rows.append(_row(f"{_FE}.text_normalize", s.TEXT_NORMALIZE, "text_normalize"))
    for mode in s.MODES:
        rows.append(_row(f"{_FE}.frontend_{mode}", f"tts_frontend.{mode}", "frontend",
                         **{s.MODE: mode}))
    for method, span in _AUDIO_STAGES:
        rows.append(_row(f"{_FE}.{method}", span, "audio"))
    for cls in ("CosyVoiceModel", "CosyVoice2Model", "CosyVoice3Model"):
        rows.append(_row(f"{_MODEL}:{cls}.tts", s.MODEL_TTS, "model_tts", roles=PART_ROLES,
                         optional=cls != "CosyVoiceModel"))
        rows.append(_row(f"{_MODEL}:{cls}.token2wav", s.TOKEN2WAV, "token2wav",
                         optional=cls != "CosyVoiceModel"))
    for target, span, extractor in (
            ("cosyvoice.llm.llm:TransformerLM.inference", s.ACOUSTIC_MODEL, "acoustic"),
            ("cosyvoice.llm.llm:Qwen2LM.inference", s.ACOUSTIC_MODEL, "acoustic"),
            ("cosyvoice.flow.flow:MaskedDiffWithXvec.inference", s.FLOW, "flow"),
            ("cosyvoice.flow.flow:CausalMaskedDiffWithXvec.inference", s.FLOW, "flow"),
            ("cosyvoice.flow.flow:CausalMaskedDiffWithDiT.inference", s.FLOW, "flow"),
            ("cosyvoice.hifigan.generator:HiFTGenerator.inference", s.VOCODER, "vocoder"),
            ("cosyvoice.hifigan.generator:CausalHiFTGenerator.inference", s.VOCODER,
             "vocoder")):
        rows.append(_row(target, span, extractor, optional=True))
    rows.append(_row("cosyvoice.llm.llm:Qwen2LM.inference_bistream", s.ACOUSTIC_MODEL,
                     "acoustic", optional=True, **{s.TEXT_STREAMED: True}))
    # ASR: FunASR when the app uses it, and the demo engine's own transcriber
    rows.append(_row("funasr:AutoModel.generate", s.ASR, "asr", optional=True))
    rows.append(_row("cosyvoice.utils.asr:TinyTranscriber.generate", s.ASR, "asr",
                     optional=True))
    return tuple(rows)


def all_spans(rows: Iterable[Stage]) -> set[str]:
    """Every span name the rows can make, their roles' (and roles' roles') included."""
    names: set[str] = set()
    todo: list[Stage | Role] = list(rows)
    while todo:  # the data has no cycles: a role's roles are always a smaller table
        item = todo.pop()
        names.add(item.span)
        todo.extend(item.roles)
    return names


PROFILES: dict[str, tuple[Stage, ...]] = {"cosyvoice": _cosyvoice_profile()}

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
    from cosyvoice_otel.instrumentation.extractors import EXTRACTORS

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
