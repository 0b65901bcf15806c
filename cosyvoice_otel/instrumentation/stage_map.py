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

Extending without code: ``--stage NAME=module:Class.method`` (repeatable) or ``--stage-map
FILE`` (TOML rows); what a row is and how it is written: ``cosyvoice_otel/stage_rows.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from cosyvoice_otel import schema as s
from cosyvoice_otel.stage_rows import (  # noqa: F401 - re-exported: the rows' vocabulary
    Role,
    Stage,
    StageMapError,
    StageSource,
    parse_stage_spec,
    parse_stage_specs,
    stage_source,
)
from cosyvoice_otel.stage_rows import row as _row

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
                             roles=API_ROLES, attributes={s.MODE: mode}))
    rows.append(_row(f"{_CLI}:CosyVoice.add_zero_shot_spk", s.SPEAKER_ADD, "speaker_add",
                     roles=API_ROLES))
    # Upstream's own classes, patched at import so a first request does no resolving work.
    # The roles above trace any other class; these rows are a shortcut, not the mechanism.
    rows.append(_row(f"{_FE}.text_normalize", s.TEXT_NORMALIZE, "text_normalize"))
    for mode in s.MODES:
        rows.append(_row(f"{_FE}.frontend_{mode}", f"tts_frontend.{mode}", "frontend",
                         attributes={s.MODE: mode}))
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
                     "acoustic", optional=True, attributes={s.TEXT_STREAMED: True}))
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

def declare_rows(rows: Iterable[Stage]) -> None:
    """A user row's span is a stage the schema and the metrics know."""
    for row in rows:
        if not s.known_stage(row.span) and s.NAME_RULE.match(row.span):
            s.declare_stage(row.span, f"stage row {row.target}")


def declare_source(source: StageSource) -> None:
    """Register a stage-map file's declared stages and reasons, then its rows' spans, with the
    schema (a declaration's meaning wins over a row's generic one)."""
    for kind, name, meaning in source.declarations:
        if kind == "reason":
            s.declare_reason(name, meaning)
        elif not s.known_stage(name):
            s.declare_stage(name, meaning)
    declare_rows(source.rows)


def build(profile: str = "cosyvoice", extra: Iterable[Stage] = ()) -> tuple[Stage, ...]:
    """The built-in profile plus user rows; a user row for the same target replaces the built-in."""
    rows = {stage.target: stage for stage in PROFILES[profile]}
    for stage in extra:
        rows[stage.target] = stage
    return tuple(rows.values())
