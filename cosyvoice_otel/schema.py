"""The tracing schema: span names, parent rules and attributes. ONE source of truth.

The instrumentor takes its span names from here, ``docs/tracing-schema.md`` is generated from
here (``cosyvoice-traced schema``), and the tests check traces against it. Bump
``SCHEMA_VERSION`` on any incompatible change (a renamed span or attribute).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

SCHEMA_VERSION = "1.0"

# Attribute names used by the extractors (kept as constants so a typo is an ImportError).
MODE = "cosyvoice.mode"
STREAM = "cosyvoice.stream"
SPEED = "cosyvoice.speed"
TEXT_LENGTH = "cosyvoice.text.length"
SENTENCE_COUNT = "cosyvoice.sentence.count"
TEXT_HASH = "cosyvoice.text.hash"
AUDIO_SECONDS = "cosyvoice.audio.seconds"
RTF = "cosyvoice.rtf"
FIRST_CHUNK_MS = "cosyvoice.first_chunk.ms"
CHUNK_COUNT = "cosyvoice.chunk.count"
CHUNK_INDEX = "cosyvoice.chunk.index"
FINALIZE = "cosyvoice.finalize"
TOKEN_OFFSET = "cosyvoice.token_offset"
HOP_AUDIO_SECONDS = "cosyvoice.hop.audio_seconds"
SAMPLE_RATE = "cosyvoice.sample_rate"
SPEECH_TOKENS = "cosyvoice.speech_tokens"
TOKENS_PER_SECOND = "cosyvoice.tokens_per_second"
MEL_FRAMES = "cosyvoice.mel.frames"
PROMPT_SECONDS = "audio.duration_s"
PROMPT_SAMPLE_RATE = "audio.sample_rate"
PROMPT_CHANNELS = "audio.channels"
AUDIO_FORMAT = "audio.format"
AUDIO_RMS_DBFS = "audio.rms_dbfs"
AUDIO_PEAK_DBFS = "audio.peak_dbfs"
AUDIO_CLIPPING = "audio.clipping_ratio"
AUDIO_SILENCE = "audio.silence_ratio"
AUDIO_SNR_DB = "audio.snr_db"
ASR_TEXT_LENGTH = "asr.text.length"
ABANDONED = "cosyvoice.abandoned"
ERROR_TYPE = "error.type"
CUDA_SYNCED = "cuda.synchronized"
CUDA_PEAK_BYTES = "cuda.peak_memory_bytes"
GPU_MS = "cosyvoice.gpu.ms"
GPU_MEMORY_DELTA = "cosyvoice.gpu.memory_delta_bytes"
GPU_PEAK_EXCLUSIVE = "cosyvoice.gpu.peak_exclusive"
TEXT_STREAMED = "cosyvoice.text.streamed"
TEXT_TOKENS = "cosyvoice.text.tokens"
LLM_BACKEND = "cosyvoice.llm.backend"
ZERO_SHOT_SPK_ID = "cosyvoice.zero_shot_spk_id"
INFLIGHT = "cosyvoice.inflight"
WARMUP = "cosyvoice.warmup"
END_REASON = "cosyvoice.end_reason"
END_REASONS = ("completed", "interrupted", "error")
LLM_FIRST_TOKEN_MS = "cosyvoice.llm.first_token_ms"
CHUNK_EVENT = "tts.chunk"
CHUNK_AUDIO_SECONDS = "tts.chunk.audio_seconds"
CHUNK_RTF = "tts.chunk.rtf"
CHUNK_GAP_MS = "tts.chunk.gap_ms"
CHUNK_LATE_PART = "tts.chunk.late_part"
# What the listener hears (a streamed request; instrumentation/listener.py)
PLAYBACK_STALL_MS = "tts.playback.stall_ms"
PLAYBACK_STALLS = "tts.playback.stalls"
PLAYBACK_LONGEST_MS = "tts.playback.longest_stall_ms"
PLAYBACK_CONTINUOUS = "tts.playback.continuous"
PLAYBACK_LATE_PART = "tts.playback.late_part"
PLAYBACK_BUFFER_MS = "tts.playback.buffer_ms"
PLAYBACK_THRESHOLD_MS = "tts.playback.threshold_ms"
# The first chunk's critical path: request start (queue included) to the first audio chunk,
# split by where the time went; the parts add up to FIRST_CHUNK_REQUEST_MS
FIRST_CHUNK_REQUEST_MS = "tts.first_chunk.request_ms"
PARTS = ("queue", "text", "prompt_audio", "llm", "flow", "vocoder", "other")
FIRST_CHUNK_PARTS = {part: f"tts.first_chunk.{part}_ms" for part in PARTS}
# the part of the pipeline each extractor's stage is (what a stage row's extractor says it is);
# an extractor not listed (inference, token2wav, asr, the streamed text...) is "other"
EXTRACTOR_PARTS = {"text_normalize": "text", "frontend": "text", "audio": "prompt_audio",
                   "model_tts": "llm", "acoustic": "llm", "flow": "flow", "vocoder": "vocoder"}
INPUT_FINGERPRINT = "cosyvoice.input.fingerprint"
OUTPUT_DIGEST = "tts.output.digest"
OUTPUT_SAMPLES = "tts.output.samples"
OUTPUT_FILE = "tts.output.file"
OUTPUT_FILE_DIGEST = "tts.output.file_digest"
# The configuration behind a number, read from the loaded model object
MODEL_VERSION = "cosyvoice.model.version"
FP16 = "cosyvoice.fp16"
LOAD_JIT = "cosyvoice.load_jit"
LOAD_TRT = "cosyvoice.load_trt"
LOAD_VLLM = "cosyvoice.load_vllm"
TORCH_VERSION = "cosyvoice.torch.version"
DEVICE = "cosyvoice.device"
CONFIG_HASH = "cosyvoice.config.hash"
# OpenTelemetry GenAI semantic conventions (development status upstream; see the schema docs)
GENAI_OPERATION = "gen_ai.operation.name"
GENAI_PROVIDER = "gen_ai.provider.name"
GENAI_OUTPUT_TYPE = "gen_ai.output.type"
GENAI_MODEL = "gen_ai.request.model"
GENAI_VOICE = "gen_ai.speech.voice"
GENAI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GENAI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GENAI_AUDIO_OUTPUT_TOKENS = "gen_ai.usage.audio.output_tokens"
GENAI_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GENAI_INPUT_LANGUAGE = "gen_ai.speech.input.language"
GENAI_SERVER_TTFT = "gen_ai.server.time_to_first_token"
QUEUE_WAIT_MS = "gradio.queue.wait_ms"
BATCH_SIZE = "gradio.batch.size"
GRADIO_FN = "gradio.fn"
BATCH_TRACE_IDS = "gradio.batch.trace_ids"

INFERENCE = "cosyvoice.inference"
TEXT_NORMALIZE = "tts_frontend.text_normalize"
MODEL_TTS = "model.tts"
ACOUSTIC_MODEL = "acoustic_model"
TOKEN2WAV = "token2wav"
FLOW = "flow"
VOCODER = "vocoder"
ASR = "asr_transcribe"
TEXT_STREAM = "tts_frontend.text_stream"
SPEAKER_ADD = "cosyvoice.add_zero_shot_spk"
GRADIO_EVENT = "gradio.event"
MODES = ("sft", "zero_shot", "cross_lingual", "instruct", "instruct2", "vc")
# the attribute extractors a stage row may name (instrumentation/extractors.py implements them)
EXTRACTORS = ("none", "inference", "text_normalize", "frontend", "audio", "model_tts",
              "token2wav", "acoustic", "flow", "vocoder", "asr", "speaker_add", "text_stream")

# Metrics (--metrics): recorded from EVERY request by the wrappers that end the stage spans
REQUEST_DURATION = "tts.request.duration"
TIME_TO_FIRST_AUDIO = "tts.time_to_first_audio"
RTF_METRIC = "tts.rtf"
STAGE_DURATION = "tts.stage.duration"
LLM_TOKEN_RATE = "tts.llm.tokens_per_second"
PLAYBACK_STALL = "tts.playback.stall"
REQUESTS = "tts.requests"
ERRORS = "tts.errors"
STAGE = "tts.stage"
SERVICE_VERSION = "service.version"
# the tracer's own health
SPANS_EXPORTED = "cosyvoice_otel.spans.exported"
SPANS_SPOOLED = "cosyvoice_otel.spans.spooled"
SPANS_REPLAYED = "cosyvoice_otel.spans.replayed"
SPANS_DROPPED = "cosyvoice_otel.spans.dropped"
SPOOL_SIZE = "cosyvoice_otel.spool.size"
EXPORT_FAILURES = "cosyvoice_otel.export.failures"
TRACING_ERRORS = "cosyvoice_otel.tracing.errors"
VALUES_REPLACED = "cosyvoice_otel.values.replaced"
DROP_REASON = "reason"
SAMPLING_RATE = "cosyvoice.sampling.rate"
# why spans were lost for good (the tracer-health metric's ``reason`` label): the SDK's queue was
# full; the spool was full while the backend was away; the backend refused the spans (alone,
# after bisecting the batch; or a spooled batch that kept failing while others got through);
# they were too large alone (413); the backend's answer timed out twice; a spool file could not
# be read; the exporter failed; keep-errors evicted them before the trace ended; the spool's
# disk refused the write
DROP_REASONS = ("queue_full", "spool_cap", "rejected", "too_large", "timeout",
                "spool_unreadable", "export_error", "keep_errors_evicted", "disk_full")


@dataclass(frozen=True)
class Attr:
    name: str
    type: str  # string | int | double | bool
    unit: str = ""
    required: bool = True
    meaning: str = ""


# Where a name comes from: OpenTelemetry's semantic conventions (stable, or development: may still
# change), an open proposal not merged upstream (draft), or this project (ours). Not listed: ours.
STATUSES = ("stable", "development", "draft", "ours")
CONVENTION_STATUS = {
    ERROR_TYPE: "stable",
    GENAI_OPERATION: "development", GENAI_PROVIDER: "development",
    GENAI_OUTPUT_TYPE: "development", GENAI_MODEL: "development",
    GENAI_INPUT_TOKENS: "development", GENAI_OUTPUT_TOKENS: "development",
    GENAI_AUDIO_OUTPUT_TOKENS: "development", GENAI_TIME_TO_FIRST_CHUNK: "development",
    GENAI_SERVER_TTFT: "development",
    GENAI_VOICE: "draft", GENAI_INPUT_LANGUAGE: "draft",
}


def status_of(name: str) -> str:
    """stable | development | draft | ours (``CONVENTION_STATUS``)."""
    return CONVENTION_STATUS.get(name, "ours")


@dataclass(frozen=True)
class SpanDef:
    name: str
    parents: tuple[str, ...]
    meaning: str
    attributes: tuple[Attr, ...] = field(default=())


_AUDIO_QUALITY = (
    Attr(AUDIO_FORMAT, "string", "", False, "container/sample format: wav/pcm16, tensor/float32"),
    Attr(AUDIO_RMS_DBFS, "double", "dBFS", False, "level: RMS in dB below full scale"),
    Attr(AUDIO_PEAK_DBFS, "double", "dBFS", False, "peak in dB below full scale"),
    Attr(AUDIO_CLIPPING, "double", "", False, "share of samples at full scale (|x| >= 0.999)"),
    Attr(AUDIO_SILENCE, "double", "", False, "share of 20 ms frames quieter than -45 dBFS"),
    Attr(AUDIO_SNR_DB, "double", "dB", False, "an ESTIMATE of the signal-to-noise ratio: the "
         "loudest decile of 20 ms frames (speech) over the quietest decile (the noise floor "
         "between words); low for noisy audio and for audio without pauses"),
)
_AUDIO = (Attr(PROMPT_SECONDS, "double", "s", False, "prompt audio duration"),
          Attr(PROMPT_SAMPLE_RATE, "int", "Hz", False, "prompt audio sample rate"),
          Attr(PROMPT_CHANNELS, "int", "", False, "prompt audio channels"),
          *_AUDIO_QUALITY)

SPANS: tuple[SpanDef, ...] = (
    SpanDef(GRADIO_EVENT, ("<http server span of /queue/join or /call/{api}>",),
            "One Gradio queue run of an event (CONSUMER: starts after the join request ended)",
            (Attr(GRADIO_FN, "string", "", True, "the event's api name or function"),
             Attr(QUEUE_WAIT_MS, "double", "ms", True, "time the event waited in the queue"),
             Attr(BATCH_SIZE, "int", "", True, "events served by this run"),
             Attr(BATCH_TRACE_IDS, "string", "", False,
                  "trace ids of the other events of a batch (also span links; Zipkin keeps "
                  "no links)"))),
    SpanDef(INFERENCE, ("gradio.event", "<http server span>", "<any>"),
            "One inference_* call, from first chunk requested to the generator's end",
            (Attr(MODE, "string", "", True, "sft|zero_shot|cross_lingual|instruct|instruct2|vc"),
             Attr(STREAM, "bool", "", True, "streaming inference"),
             Attr(SPEED, "double", "", True, "speed factor"),
             Attr(TEXT_LENGTH, "int", "characters", False, "length of the text (not vc)"),
             Attr(SENTENCE_COUNT, "int", "", False, "sentences the text was split into"),
             Attr(TEXT_STREAMED, "bool", "", False,
                  "tts_text was a generator (streaming text input, v2/v3): no length known"),
             Attr(ZERO_SHOT_SPK_ID, "string", "", False,
                  "the cached speaker (add_zero_shot_spk) that replaced the prompt audio"),
             Attr(TEXT_HASH, "string", "", False,
                  "with --hash-content: HMAC-SHA256 of the text, salted, 16 hex"),
             Attr(CHUNK_COUNT, "int", "", True, "audio chunks yielded"),
             Attr(AUDIO_SECONDS, "double", "s", True, "audio produced"),
             Attr(RTF, "double", "", False, "real-time factor: wall time / audio seconds"),
             Attr(FIRST_CHUNK_MS, "double", "ms", False,
                  "time to the first audio chunk, from this span's start"),
             Attr(FIRST_CHUNK_REQUEST_MS, "double", "ms", False,
                  "the first chunk's critical path: from the request's start (its top span's "
                  "start, minus the Gradio queue wait) to the first audio chunk; the "
                  "tts.first_chunk.<part>_ms add up to it"),
             *(Attr(FIRST_CHUNK_PARTS[part], "double", "ms", False, meaning) for part, meaning in (
                 ("queue", "first-chunk time spent queued (Gradio's queue wait)"),
                 ("text", "... in the text frontend (normalisation, text tokens, frontend_*)"),
                 ("prompt_audio", "... turning the prompt audio into speech tokens, speaker "
                  "embedding and mel features"),
                 ("llm", "... waiting for the LLM's speech tokens of the first hop"),
                 ("flow", "... in flow matching (tokens -> mel) for the first chunk"),
                 ("vocoder", "... in the vocoder (mel -> waveform) for the first chunk"),
                 ("other", "... anywhere else: the HTTP/app code, token2wav's own work, "
                  "waiting for a thread"))),
             Attr(GENAI_TIME_TO_FIRST_CHUNK, "double", "s", False,
                  "GenAI semconv: time to the first chunk, seen by the server: "
                  "tts.first_chunk.request_ms in seconds"),
             Attr(PLAYBACK_STALL_MS, "double", "ms", False,
                  "a request heard chunk by chunk (streamed, or several sentences: upstream's "
                  "apps send each as it comes): how long a listener who starts playing at the "
                  "first chunk (after tts.playback.buffer_ms) hears silence waiting for audio, "
                  "summed"),
             Attr(PLAYBACK_STALLS, "int", "", False,
                  "chunk by chunk: stalls longer than tts.playback.threshold_ms"),
             Attr(PLAYBACK_LONGEST_MS, "double", "ms", False, "chunk by chunk: the longest stall"),
             Attr(PLAYBACK_CONTINUOUS, "bool", "", False,
                  "chunk by chunk: no stall longer than the threshold"),
             Attr(PLAYBACK_LATE_PART, "string", "", False,
                  "chunk by chunk, with a stall over the threshold: where the longest stall's time "
                  "went between its chunk and the one before (llm, flow, vocoder, ...)"),
             Attr(PLAYBACK_BUFFER_MS, "double", "ms", False,
                  "the start buffer the playback figures assume (--playback-buffer-ms)"),
             Attr(PLAYBACK_THRESHOLD_MS, "double", "ms", False,
                  "the stall threshold (--stall-threshold-ms)"),
             Attr(INPUT_FINGERPRINT, "string", "", False,
                  "a keyed fingerprint of the input (HMAC-SHA256 of the normalised texts, mode, "
                  "speaker, prompt-audio samples, speed, stream; 16 hex): equal for the same "
                  "input under the same secret, never reversible without it"),
             Attr(OUTPUT_DIGEST, "string", "", False,
                  "SHA-256 (16 hex) of the synthesised samples as float32 (a float WAV of "
                  "them has this digest; triage --audio)"),
             Attr(OUTPUT_SAMPLES, "int", "samples", False, "synthesised samples"),
             Attr(GENAI_AUDIO_OUTPUT_TOKENS, "int", "tokens", False,
                  "GenAI semconv: audio tokens produced: the LLM's speech tokens"),
             Attr(GENAI_INPUT_LANGUAGE, "string", "", False,
                  "GenAI draft: zh when the text has a CJK ideograph, else en (the split "
                  "upstream's text frontend makes to pick its normaliser)"),
             Attr(ABANDONED, "bool", "", False, "the consumer stopped before the end"),
             Attr(END_REASON, "string", "", True, "completed | interrupted (the client "
                  "abandoned or disconnected mid-stream) | error"),
             Attr(INFLIGHT, "int", "requests", True,
                  "synthesis requests inside the engine when this one started, itself included"),
             Attr(WARMUP, "bool", "", True,
                  "first request of this process for its (mode, stream) pair"),
             Attr(LLM_FIRST_TOKEN_MS, "double", "ms", False,
                  "model.tts entry to the LLM thread's first speech token (first sentence)"),
             Attr(MODEL_VERSION, "int", "", False, "CosyVoice version of the loaded model: 1, 2, 3"),
             Attr(FP16, "bool", "", False, "the model runs in fp16"),
             Attr(LOAD_JIT, "bool", "", False, "TorchScript parts loaded (load_jit)"),
             Attr(LOAD_TRT, "bool", "", False, "TensorRT flow estimator loaded (load_trt)"),
             Attr(LOAD_VLLM, "bool", "", False, "the LLM served by vLLM (load_vllm)"),
             Attr(TORCH_VERSION, "string", "", False, "torch.__version__ in the process"),
             Attr(DEVICE, "string", "", False, "GPU model name, or cpu"),
             Attr(CONFIG_HASH, "string", "", False,
                  "first 12 hex of the SHA-256 of the model's cosyvoice*.yaml"),
             Attr(GENAI_OPERATION, "string", "", True, "GenAI semconv: text_to_speech"),
             Attr(GENAI_PROVIDER, "string", "", True, "GenAI semconv: cosyvoice"),
             Attr(GENAI_OUTPUT_TYPE, "string", "", True, "GenAI semconv: speech"),
             Attr(GENAI_MODEL, "string", "", False,
                  "GenAI semconv: the model directory's base name, e.g. Fun-CosyVoice3-0.5B"),
             Attr(GENAI_VOICE, "string", "", False, "the preset speaker id (sft, instruct), the "
                  "cached zero_shot_spk_id, else the mode (zero_shot, cross_lingual, ...): never "
                  "audio"),
             Attr(GENAI_INPUT_TOKENS, "int", "tokens", False,
                  "GenAI semconv: text tokens the LLM read (prompt text included)"),
             Attr(GENAI_OUTPUT_TOKENS, "int", "tokens", False,
                  "GenAI semconv: speech tokens the LLM produced"),
             *(Attr(a.name, a.type, a.unit, False, "the prompt audio's, copied from its stage "
                    "(report --by, --errors): " + a.meaning) for a in _AUDIO_QUALITY))),
    SpanDef(TEXT_NORMALIZE, (INFERENCE,), "Text normalisation and sentence split",
            (Attr(TEXT_LENGTH, "int", "characters", False,
                  "input text length (absent for streamed text)"),
             Attr(TEXT_STREAMED, "bool", "", False, "the text is a generator: not normalised"),
             Attr(SENTENCE_COUNT, "int", "", False, "sentences (split=True only)"))),
    SpanDef(SPEAKER_ADD, ("<any>",),
            "add_zero_shot_spk: a prompt turned into a cached speaker, reused by id",
            (Attr(ZERO_SHOT_SPK_ID, "string", "", True, "the id the speaker is cached under"),)),
    SpanDef("tts_frontend.<mode>", (INFERENCE, "tts_frontend.<mode>", SPEAKER_ADD),
            "Model input for one sentence (one mode's frontend may call another's)",
            (Attr(MODE, "string", "", True, "the frontend's mode"),
             Attr(TEXT_LENGTH, "int", "characters", False, "sentence length"),
             Attr(ZERO_SHOT_SPK_ID, "string", "", False, "cached speaker used instead of audio"))),
    SpanDef("audio_preprocess.speech_tokenizer", ("tts_frontend.<mode>",),
            "Prompt audio -> speech tokens", _AUDIO),
    SpanDef("audio_preprocess.speaker_embedding", ("tts_frontend.<mode>",),
            "Prompt audio -> speaker embedding", _AUDIO),
    SpanDef("audio_preprocess.speech_feat", ("tts_frontend.<mode>",),
            "Prompt audio -> mel features", _AUDIO),
    SpanDef(MODEL_TTS, (INFERENCE,), "One sentence through the model (LLM thread + token2wav)",
            (Attr(STREAM, "bool", "", True, "streaming"),
             Attr(CHUNK_COUNT, "int", "", True, "chunks yielded"),
             Attr(LLM_FIRST_TOKEN_MS, "double", "ms", False,
                  "entry to the LLM thread's first speech token"))),
    SpanDef(ACOUSTIC_MODEL, (MODEL_TTS,),
            "The LLM job (text -> speech tokens), in its worker thread",
            (Attr(SPEECH_TOKENS, "int", "tokens", True, "speech tokens generated"),
             Attr(TOKENS_PER_SECOND, "double", "tokens/s", True, "generation speed"),
             Attr(LLM_BACKEND, "string", "", True,
                  "torch, or vllm when load_vllm gave the LLM an engine"),
             Attr(TEXT_STREAMED, "bool", "", False, "inference_bistream: text as a generator"))),
    SpanDef(TEXT_STREAM, (ACOUSTIC_MODEL,),
            "Streaming text input: text tokens the LLM pulled while generating",
            (Attr(TEXT_TOKENS, "int", "tokens", True, "text tokens streamed in"),)),
    SpanDef(TOKEN2WAV, (MODEL_TTS,), "Tokens -> waveform, once or per streamed hop",
            (Attr(CHUNK_INDEX, "int", "", True, "0-based chunk number within model.tts"),
             Attr(FINALIZE, "bool", "", True, "last chunk"),
             Attr(TOKEN_OFFSET, "int", "tokens", False,
                  "v2/v3 streaming: speech tokens of the utterance before this hop (flow's "
                  "cosyvoice.speech_tokens minus this are the hop's new tokens)"),
             Attr(HOP_AUDIO_SECONDS, "double", "s", False,
                  "audio this hop DELIVERED (the samples token2wav returned); summed over a "
                  "request's hops it is the request's audio, on every version"))),
    SpanDef(FLOW, (TOKEN2WAV,), "Flow matching: tokens -> mel (what it PROCESSED: in v2/v3 "
            "streaming every hop re-runs flow over the utterance so far, so per-hop figures "
            "are cumulative; use token2wav's cosyvoice.hop.audio_seconds for what a hop "
            "delivered)",
            (Attr(SPEECH_TOKENS, "int", "tokens", True, "input tokens (all so far, v2/v3 "
                  "streaming)"),
             Attr(MEL_FRAMES, "int", "frames", True, "mel frames out"))),
    SpanDef(VOCODER, (TOKEN2WAV,), "Vocoder: mel -> waveform (what it PROCESSED: v3's causal "
            "HiFT re-runs over the utterance so far at every streamed hop)",
            (Attr(MEL_FRAMES, "int", "frames", True, "mel frames in"),
             Attr(AUDIO_SECONDS, "double", "s", True, "waveform seconds out (processed; "
                  "v3 streaming: cumulative)"))),
    SpanDef(ASR, ("<any>",), "Prompt audio transcription (FunASR or the demo's transcriber)",
            (Attr(ASR_TEXT_LENGTH, "int", "characters", True, "transcript length"),
             *_AUDIO_QUALITY)),
)

ERROR_REASONS = {
    "asr_empty_result": "the transcriber returned no text (event 'ASR returned empty result')",
    "text_too_long": "synthesis text over the input limit (event 'input limit exceeded' with "
                     "cosyvoice.text.length and limit.characters)",
    "invalid_input_duration": "prompt audio over the input limit (event 'input limit "
                              "exceeded' with audio.duration_s and limit.seconds)",
    "invalid_reason": "the app called fail() with a reason that breaks the naming rule",
    "<exception class>": "any other failure: the exception's class name",
}

# The tags worth filtering on in Zipkin's UI: its AUTOCOMPLETE_KEYS (`zipkin start` sets them;
# the README tells operators with their own Zipkin to set the same)
AUTOCOMPLETE_KEYS = (MODE, STREAM, ERROR_TYPE, WARMUP, END_REASON, MODEL_VERSION,
                     "service.version")

# Span events: name -> (on which span, its attributes, meaning)
EVENTS = {
    CHUNK_EVENT: (INFERENCE, (
        Attr(CHUNK_AUDIO_SECONDS, "double", "s", True, "audio seconds of this chunk"),
        Attr(CHUNK_RTF, "double", "", True,
             "wall time since the previous chunk (or the request's start) / its audio seconds"),
        Attr(CHUNK_INDEX, "int", "", True, "0-based chunk number"),
        Attr(CHUNK_GAP_MS, "double", "ms", False,
             "the silence a listener hears before this chunk (0: in time)"),
        Attr(CHUNK_LATE_PART, "string", "", False,
             "gap over the threshold: where the time since the previous chunk went")),
        "one per audio chunk the request yields (streamed hops: the first ones show warm-up)"),
}

# How the OpenTelemetry GenAI conventions are used (they are in "development" status upstream:
# names may still change; ours follow semantic-conventions 1.37+, where gen_ai.provider.name
# replaced gen_ai.system).
GENAI_NOTES = (
    "Status: Development upstream (the GenAI conventions now live in "
    "open-telemetry/semantic-conventions-genai); names may still change.",
    "`gen_ai.output.type` = `speech` is one of the convention's listed output types.",
    "`gen_ai.operation.name` = `text_to_speech` is not (yet) one of the convention's well-known "
    "values (`chat`, `embeddings`, ...); the convention allows others.",
    "Status column: `stable` and `development` names are registered OpenTelemetry semantic "
    "conventions; `draft` ones come from the open text-to-speech proposal (operation "
    "`text_to_speech`, `gen_ai.speech.voice`, `gen_ai.speech.input.language`), not merged; "
    "`ours` are this project's, kept beside the registered ones.",
    "`gen_ai.response.time_to_first_chunk` is defined as seen by the client; ours is seen by "
    "the server (request start, queue included, to the first chunk), in seconds, beside "
    "`tts.first_chunk.request_ms`. The client metrics `gen_ai.client.operation.time_to_first_"
    "chunk` / `time_per_output_chunk` are the client's to record: a server-side tracer does "
    "not emit them; `gen_ai.server.time_to_first_token` (request start to the first speech "
    "token) is recorded.",
    "What the draft lacks for text-to-speech, kept as ours: the audio's duration "
    "(`cosyvoice.audio.seconds`), the real-time factor (`cosyvoice.rtf`), what a listener "
    "hears (`tts.playback.*`: stalls, continuity), where the first chunk's time went "
    "(`tts.first_chunk.*`), the text's length, and a same-input key "
    "(`cosyvoice.input.fingerprint`).",
    "`gen_ai.usage.input_tokens` counts the text tokens the LLM read (prompt text included), "
    "`gen_ai.usage.output_tokens` the speech tokens it produced; both summed over sentences.",
    "Only the request's `cosyvoice.inference` span carries them: the stage spans are not GenAI "
    "operations of their own.",
)

COMMON_ATTRIBUTES = (
    Attr(ERROR_TYPE, "string", "", False, "stable error reason, on failed spans"),
    Attr(SAMPLING_RATE, "double", "", False,
         "the ratio that decided this trace, when below 1 (on the span where it was decided: "
         "the request's top span); `report` says its figures are sampled"),
    Attr(CUDA_SYNCED, "bool", "", False, "--cuda-sync: the span ended after "
         "torch.cuda.synchronize(), so its duration includes the stage's GPU work (exact, but "
         "the GPU is serialised)"),
    Attr(GPU_MS, "double", "ms", False, "--gpu-timing events: GPU time between the stage's "
         "start and end, from CUDA events on its stream (resolved off the request thread; "
         "the span's duration stays the wall time of the call)"),
    Attr(GPU_MEMORY_DELTA, "int", "bytes", False, "--gpu-timing events: memory_allocated() at "
         "the end minus at the start (the caching allocator's count: no sync, per stage)"),
    Attr(CUDA_PEAK_BYTES, "int", "bytes", False, "peak GPU memory during the stage: with "
         "--cuda-sync (process-wide: under concurrency another request's), or with "
         "--gpu-timing only when no other stage started meanwhile"),
    Attr(OUTPUT_FILE, "string", "", False, "the base name of a WAV the app wrote while this "
         "span was current (torchaudio.save, soundfile.write, scipy's wavfile.write, wave): "
         "on the request's top span"),
    Attr(OUTPUT_FILE_DIGEST, "string", "", False, "SHA-256 (16 hex) of that WAV's sample "
         "data as written (triage --audio finds the trace of the file)"),
    Attr(GPU_PEAK_EXCLUSIVE, "bool", "", False, "cuda.peak_memory_bytes was measured while "
         "no other stage of ours ran: it is this stage's own"),
)


@dataclass(frozen=True)
class MetricDef:
    name: str
    instrument: str  # histogram | counter | gauge
    unit: str
    labels: tuple[str, ...]
    meaning: str
    prometheus: str  # the name on /metrics (OpenMetrics: counters add _total)


_REQUEST_LABELS = (MODE, STREAM, WARMUP, ERROR_TYPE, SERVICE_VERSION)
METRICS: tuple[MetricDef, ...] = (
    MetricDef(REQUEST_DURATION, "histogram", "s", _REQUEST_LABELS,
              "one synthesis call (`cosyvoice.inference`), start to last audio",
              "tts_request_duration_seconds"),
    MetricDef(TIME_TO_FIRST_AUDIO, "histogram", "s", (MODE, STREAM, WARMUP, SERVICE_VERSION),
              "request start to its first audio chunk", "tts_time_to_first_audio_seconds"),
    MetricDef(RTF_METRIC, "histogram", "1", (MODE, STREAM, WARMUP, SERVICE_VERSION),
              "real-time factor of a request: wall time / audio seconds", "tts_rtf"),
    MetricDef(STAGE_DURATION, "histogram", "s", (STAGE, MODE, WARMUP, ERROR_TYPE, SERVICE_VERSION),
              "one stage span (`tts.stage` = its span name)", "tts_stage_duration_seconds"),
    MetricDef(LLM_TOKEN_RATE, "histogram", "{token}/s", (MODE, WARMUP, SERVICE_VERSION),
              "speech tokens per second of one acoustic_model run",
              "tts_llm_tokens_per_second"),
    MetricDef(PLAYBACK_STALL, "histogram", "s", (MODE, WARMUP, SERVICE_VERSION),
              "a chunk-by-chunk request's playback stall (tts.playback.stall_ms; 0 for a smooth "
              "one)",
              "tts_playback_stall_seconds"),
    MetricDef(GENAI_SERVER_TTFT, "histogram", "s", (GENAI_OPERATION, GENAI_PROVIDER, MODE,
                                                    STREAM, SERVICE_VERSION),
              "GenAI semconv: request start to the LLM's first speech token",
              "gen_ai_server_time_to_first_token_seconds"),
    MetricDef(REQUESTS, "counter", "{request}", _REQUEST_LABELS,
              "synthesis calls ended (error.type set on failed ones)", "tts_requests_total"),
    MetricDef(ERRORS, "counter", "{request}", (ERROR_TYPE, MODE, SERVICE_VERSION),
              "failed synthesis calls", "tts_errors_total"),
    MetricDef(SPANS_EXPORTED, "counter", "{span}", (),
              "spans the backend accepted (a replayed span counts when Zipkin took it)",
              "cosyvoice_otel_spans_exported_total"),
    MetricDef(SPANS_SPOOLED, "counter", "{span}", (),
              "spans written to the disk spool while Zipkin was away",
              "cosyvoice_otel_spans_spooled_total"),
    MetricDef(SPANS_REPLAYED, "counter", "{span}", (),
              "spooled spans delivered later", "cosyvoice_otel_spans_replayed_total"),
    MetricDef(SPANS_DROPPED, "counter", "{span}", (DROP_REASON,),
              "spans lost: " + ", ".join(DROP_REASONS), "cosyvoice_otel_spans_dropped_total"),
    MetricDef(SPOOL_SIZE, "gauge", "By", (), "bytes waiting in the spool",
              "cosyvoice_otel_spool_size_bytes"),
    MetricDef(EXPORT_FAILURES, "counter", "{export}", (),
              "export calls whose batch could not be delivered at once",
              "cosyvoice_otel_export_failures_total"),
    MetricDef(TRACING_ERRORS, "counter", "{error}", (),
              "failures of tracing code, contained (the app went on)",
              "cosyvoice_otel_tracing_errors_total"),
    MetricDef(VALUES_REPLACED, "counter", "{value}", (),
              "attribute values not every exporter can encode as they are (bytes, mappings, "
              "mixed lists, None, objects), exported as text or a placeholder",
              "cosyvoice_otel_values_replaced_total"),
)


_BUILT_IN_NAMES = frozenset(d.name for d in SPANS)
_ZEROS = {"int": 0, "double": 0.0, "bool": False}
_REQUIRED_ZEROS: dict[str, dict[str, object]] = {}


def required_zeros(span_name: str) -> dict[str, object]:
    """The required numeric and boolean attributes of a span, each with its zero: what a stage
    that ended early (an error, a client gone) says it produced."""
    zeros = _REQUIRED_ZEROS.get(span_name)
    if zeros is None:
        generic = "tts_frontend.<mode>" if span_name.startswith("tts_frontend.") else span_name
        definition = next((d for d in SPANS if d.name == generic), None)
        zeros = {} if definition is None else {
            a.name: _ZEROS[a.type] for a in definition.attributes
            if a.required and a.type in _ZEROS}
        _REQUIRED_ZEROS[span_name] = zeros
    return zeros


# ------------------------------------------------------- what an app declares (the third way in)

# span names and error reasons are lower-case words joined by "_" or "." (searchable, bounded)
NAME_RULE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_NAME = 64
UNDECLARED = "undeclared"  # the tts.stage label of a stage nobody declared (bounded labels)
# declarations kept (each kind): a name past it is not declared (one warning), so /metrics and
# the schema stay bounded whatever the app declares in a loop
MAX_DECLARED = 256
EXCEPTION_CLASS = re.compile(r"^[A-Z_][A-Za-z0-9_]*$")
_DECLARED_SPANS: dict[str, SpanDef] = {}
_DECLARED_REASONS: dict[str, str] = {}


def check_name(name: str, what: str = "stage name") -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME or not NAME_RULE.match(name):
        raise ValueError(f"bad {what} {name!r}: lower-case words joined by '_' or '.', at most "
                         f"{MAX_NAME} characters (e.g. emotion_tagging)")
    return name


def declare_stage(name: str, meaning: str = "", parents: tuple[str, ...] = ("<any stage>",),
                  attributes: tuple[Attr, ...] = ()) -> SpanDef:
    """A stage of the app's own (``cosyvoice_otel.stage``, a ``--stage-map`` row): named by the
    rules, listed by ``schema`` and known to the metrics (``tts.stage``)."""
    check_name(name)
    if name in {d.name for d in SPANS}:
        raise ValueError(f"{name!r} is a built-in stage; declare a name of your own")
    definition = SpanDef(name, parents, meaning or "declared by the app", attributes)
    if name in _DECLARED_SPANS or _room(_DECLARED_SPANS, "stages"):
        _DECLARED_SPANS[name] = definition
    return definition


def declare_reason(reason: str, meaning: str = "") -> str:
    """An ``error.type`` of the app's own (``cosyvoice_otel.fail(reason, ...)``)."""
    check_name(reason, "error reason")
    if reason in _DECLARED_REASONS or _room(_DECLARED_REASONS, "reasons"):
        _DECLARED_REASONS[reason] = meaning or "declared by the app"
    return reason


def _room(declared: dict, what: str) -> bool:
    """Another declaration fits; past ``MAX_DECLARED`` one warning, then silence."""
    if len(declared) < MAX_DECLARED:
        return True
    if what not in _FULL:
        _FULL.add(what)
        logging.getLogger("cosyvoice_otel").warning(
            "cosyvoice-otel: more than %d %s declared; the rest are not (metrics label them "
            "'undeclared')", MAX_DECLARED, what)
    return False


_FULL: set[str] = set()


def metric_reason(error_type: str | None) -> str | None:
    """``error.type`` as a metric label: a reason the schema lists or the app declared, an
    exception's class name, else ``undeclared`` (a bounded label; the span keeps the reason)."""
    if error_type is None or known_reason(error_type) or EXCEPTION_CLASS.match(error_type):
        return error_type
    return UNDECLARED


def forget_declarations() -> None:
    """Back to the built-in schema (tests)."""
    _DECLARED_SPANS.clear()
    _DECLARED_REASONS.clear()
    _FULL.clear()


def all_spans() -> tuple[SpanDef, ...]:
    return (*SPANS, *_DECLARED_SPANS.values())


def all_reasons() -> dict[str, str]:
    return {**ERROR_REASONS, **_DECLARED_REASONS}


def known_reason(reason: str) -> bool:
    """A built-in or declared ``error.type`` reason."""
    return reason in ERROR_REASONS or reason in _DECLARED_REASONS


def known_stage(name: str) -> bool:
    """A built-in stage name (``tts_frontend.<mode>`` included) or a declared one."""
    if name in _DECLARED_SPANS or name in _BUILT_IN_NAMES:
        return True
    return name.startswith("tts_frontend.") and name.split(".", 1)[1] in MODES


def span_names() -> set[str]:
    return {s.name for s in all_spans()}


def to_dict() -> dict:
    """The schema as plain data (``cosyvoice-traced schema --format json``)."""
    def attr(a: Attr) -> dict:
        return {"name": a.name, "type": a.type, "unit": a.unit, "required": a.required,
                "meaning": a.meaning, "status": status_of(a.name)}

    return {"schema_version": SCHEMA_VERSION,
            "spans": [{"name": d.name, "parents": list(d.parents), "meaning": d.meaning,
                       "attributes": [attr(a) for a in d.attributes],
                       "declared": d.name in _DECLARED_SPANS} for d in all_spans()],
            "common_attributes": [attr(a) for a in COMMON_ATTRIBUTES],
            "error_reasons": all_reasons(),
            "events": [{"name": name, "on": on, "meaning": meaning,
                        "attributes": [attr(a) for a in attrs]}
                       for name, (on, attrs, meaning) in EVENTS.items()],
            "modes": list(MODES),
            "metrics": [{"name": m.name, "instrument": m.instrument, "unit": m.unit,
                         "labels": list(m.labels), "meaning": m.meaning,
                         "prometheus": m.prometheus, "status": status_of(m.name)} for m in METRICS]}


def to_markdown() -> str:
    """The human copy (docs/tracing-schema.md is this text; a test keeps them equal)."""
    lines = [f"# CosyVoice tracing schema, version {SCHEMA_VERSION}", "",
             "Generated by `cosyvoice-traced schema` from `cosyvoice_otel/schema.py`, the data "
             "the instrumentor uses. Do not edit by hand.", "",
             "One synthesis request is one trace. Span names are stable within a schema "
             "version; `<mode>` is one of " + ", ".join(f"`{m}`" for m in MODES) + ".", "",
             "Content never appears: text and audio are described by lengths, durations and "
             "counts only.", ""]
    for d in all_spans():
        declared = " (declared by the app)" if d.name in _DECLARED_SPANS else ""
        lines += [f"## `{d.name}`{declared}", "", d.meaning + ".", "",
                  "Parent: " + " or ".join(f"`{p}`" for p in d.parents) + ".", ""]
        if d.attributes:
            lines += ["| attribute | type | unit | required | status | meaning |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| `{a.name}` | {a.type} | {a.unit} | {'yes' if a.required else 'no'} | "
                      f"{status_of(a.name)} | {a.meaning} |" for a in d.attributes]
            lines.append("")
    lines += ["## On any stage span", "", "| attribute | type | unit | status | meaning |",
              "|---|---|---|---|---|"]
    lines += [f"| `{a.name}` | {a.type} | {a.unit} | {status_of(a.name)} | {a.meaning} |"
              for a in COMMON_ATTRIBUTES]
    for name, (on, attrs, meaning) in EVENTS.items():
        lines += ["", f"## Event `{name}` (on `{on}`)", "", meaning + ".", "",
                  "| attribute | type | unit | status | meaning |", "|---|---|---|---|---|"]
        lines += [f"| `{a.name}` | {a.type} | {a.unit} | {status_of(a.name)} | {a.meaning} |"
                  for a in attrs]
    lines += ["", "## OpenTelemetry GenAI conventions", ""]
    lines += [f"- {note}" for note in GENAI_NOTES]
    lines += ["", "## Error reasons (`error.type`)", "", "| value | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in all_reasons().items()]
    lines += ["", "## Metrics (`--metrics prometheus|otlp`)", "",
              "Recorded from every request, sampled or not; labels are bounded (no text, no "
              "ids). A histogram observation of a sampled request carries its trace id as an "
              "exemplar.", "",
              "| metric | instrument | unit | labels | on /metrics | status | meaning |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| `{m.name}` | {m.instrument} | {m.unit} | "
              + (", ".join(f"`{label}`" for label in m.labels) or "-")
              + f" | `{m.prometheus}` | {status_of(m.name)} | {m.meaning} |" for m in METRICS]
    return "\n".join(lines) + "\n"
