"""What the wrappers and extractors read: the instrumentor's options, resolved once.

Keyword arguments of ``CosyVoiceInstrumentor().instrument(...)`` win over the settings table
(``cosyvoice_otel.settings.current()``: the launcher's rendered ``COSYVOICE_TRACED_*``, the
``OTEL_*`` fallbacks, the defaults).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cosyvoice_otel import secret_key
from cosyvoice_otel.limits import parse_input_limits
from cosyvoice_otel.settings import OPTIONS_BY_NAME, Settings

if TYPE_CHECKING:  # built by the instrumentor (instrumentor.build_options), not here
    from cosyvoice_otel.instrumentation.gpu_timing import GpuTimer
    from cosyvoice_otel.instrumentation.metrics import TtsMetrics

logger = logging.getLogger("cosyvoice_otel")


@dataclass(frozen=True)
class Options:
    stage_spans: bool
    gradio_bridge: bool
    cuda_sync: bool
    max_text_chars: int  # 0 = no limit
    max_prompt_seconds: float
    hash_salt: bytes | None  # set with --hash-content: texts get a salted hash
    # the two recorders the wrappers call, made by the instrumentor from the values above
    # (``instrumentor.build_options``); None when off, and in ``resolve``'s plain result
    metrics: TtsMetrics | None = None  # --metrics: the request and stage instruments
    gpu_timing: GpuTimer | None = None  # --gpu-timing auto|events: the CUDA event timer
    metrics_on: bool = False  # --metrics is not none (what build_options reads)
    gpu_timing_mode: str = "off"  # --gpu-timing, "off" under --cuda-sync (exact and serial)
    trace_response: bool = False  # --trace-response: gRPC's trailing metadata gets the trace id
    fingerprint_secret: bytes | None = None  # the input fingerprint's key (secret_key.py)
    playback_buffer_s: float = 0.0  # --playback-buffer-ms, in seconds
    stall_threshold_s: float = 0.1  # --stall-threshold-ms, in seconds

    @classmethod
    def resolve(cls, kwargs: dict[str, Any], settings: Settings) -> Options:
        """The plain values: the instrument() keywords over the settings."""
        def value(key: str) -> Any:
            return kwargs[key] if kwargs.get(key) is not None else getattr(settings, key)

        try:
            max_text, max_audio = parse_input_limits(value("input_limits"))
        except ValueError as exc:
            logger.warning("cosyvoice-otel: input limits %s; using the defaults", exc)
            max_text, max_audio = parse_input_limits(OPTIONS_BY_NAME["input_limits"].default)
        salt = None
        if value("hash_content"):
            # a secret, not a setting: never rendered, never printed
            secret = os.environ.get("COSYVOICE_TRACED_HASH_SALT", "")
            salt = secret.encode() if secret else os.urandom(32)
        try:
            fingerprint = secret_key.load(str(value("fingerprint_key")))
        except secret_key.KeyFileError as exc:
            logger.warning("cosyvoice-otel: %s; requests get no input fingerprint", exc)
            fingerprint = None
        cuda_sync = bool(value("cuda_sync"))
        return cls(bool(value("stage_spans")), bool(value("gradio_bridge")), cuda_sync,
                   max_text, max_audio, salt,
                   metrics_on=value("metrics") not in ("none", False),
                   gpu_timing_mode="off" if cuda_sync else str(value("gpu_timing")),
                   trace_response=bool(value("trace_response")),
                   fingerprint_secret=fingerprint,
                   playback_buffer_s=float(value("playback_buffer_ms")) / 1000.0,
                   stall_threshold_s=float(value("stall_threshold_ms")) / 1000.0)
