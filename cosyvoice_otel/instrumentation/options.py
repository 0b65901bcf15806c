"""What the wrappers and extractors read: the instrumentor's options, resolved once.

Keyword arguments of ``CosyVoiceInstrumentor().instrument(...)`` win over the settings table
(``cosyvoice_otel.settings.current()``: the launcher's rendered ``COSYVOICE_TRACED_*``, the
``OTEL_*`` fallbacks, the defaults).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from cosyvoice_otel.limits import parse_input_limits
from cosyvoice_otel.settings import OPTIONS_BY_NAME, Settings

logger = logging.getLogger("cosyvoice_otel")


@dataclass(frozen=True)
class Options:
    stage_spans: bool
    gradio_bridge: bool
    cuda_sync: bool
    max_text_chars: int  # 0 = no limit
    max_prompt_seconds: float
    hash_salt: bytes | None  # set with --hash-content: texts get a salted hash
    metrics: Any = None  # --metrics: the request and stage instruments (metrics.TtsMetrics)
    gpu_timing: Any = None  # --gpu-timing events: the CUDA event timer (gpu_timing.GpuTimer)

    @classmethod
    def resolve(cls, kwargs: dict[str, Any], settings: Settings) -> Options:
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
        recorder = None
        if value("metrics") not in ("none", False):
            try:
                from cosyvoice_otel.instrumentation import metrics as tts_metrics

                recorder = tts_metrics.create(kwargs.get("meter_provider"),
                                              settings.service_version)
            except Exception as exc:  # noqa: BLE001 - metrics must never stop tracing
                logger.warning("cosyvoice-otel: metrics are off (%s: %s)", type(exc).__name__, exc)
        timer = None
        cuda_sync = bool(value("cuda_sync"))
        if not cuda_sync and value("gpu_timing") != "off":
            from cosyvoice_otel.instrumentation import gpu_timing

            timer = gpu_timing.create(value("gpu_timing"))
        return cls(bool(value("stage_spans")), bool(value("gradio_bridge")), cuda_sync,
                   max_text, max_audio, salt, recorder, timer)
