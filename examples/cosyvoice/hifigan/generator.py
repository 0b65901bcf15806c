"""The vocoder: mel spectrogram -> waveform (upstream: cosyvoice.hifigan.generator).

``HiFTGenerator.inference(speech_feat, cache_source)`` (CosyVoice 1 and 2) and
``CausalHiFTGenerator(HiFTGenerator)``, which OVERRIDES it as ``inference(speech_feat, finalize)``
(CosyVoice 3), as upstream's classes do. Tiny: a conv and one transposed conv upsampling by the
hop size.

Demo settings (not upstream's): ``COSYVOICE_DEMO_VOCODER_DELAY_S`` (seconds, default 0) makes every
vocoder call that much slower, read when the generator is built: a "slow vocoder" for alert rules
and reports to catch (examples/prometheus/). ``COSYVOICE_DEMO_SLOW_HOP=INDEX:SECONDS`` slows ONE
streamed hop of every utterance (the model runner sets ``SLOW.seconds`` before that hop's
vocoder call): a stream that stalls at a known chunk, for the playback figures.
"""

from __future__ import annotations

import os
import threading
import time

import torch
from torch import nn

SLOW = threading.local()  # seconds the next decode in this thread sleeps (the slow-hop knob)


class HiFTGenerator(nn.Module):
    def __init__(self, in_channels: int = 80, channels: int = 64,
                 sampling_rate: int = 24000, frame_rate: int = 50) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.hop = sampling_rate // frame_rate
        self.conv_pre = nn.Conv1d(in_channels, channels, 3, padding=1)
        self.upsample = nn.ConvTranspose1d(channels, 1, kernel_size=self.hop, stride=self.hop)
        self.delay_s = float(os.environ.get("COSYVOICE_DEMO_VOCODER_DELAY_S") or 0)

    def decode(self, speech_feat: torch.Tensor) -> torch.Tensor:
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        slow, SLOW.seconds = getattr(SLOW, "seconds", 0.0), 0.0
        if slow > 0:
            time.sleep(slow)
        hidden = torch.tanh(self.conv_pre(speech_feat))
        return 0.5 * torch.tanh(self.upsample(hidden))  # [1, 1, frames * hop]

    @torch.inference_mode()
    def inference(self, speech_feat: torch.Tensor,
                  cache_source: torch.Tensor = torch.zeros(1, 1, 0)  # noqa: B008 - upstream's
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.decode(speech_feat)
        if cache_source.shape[2]:  # the cached source keeps hop boundaries seamless
            width = min(cache_source.shape[2], source.shape[2])
            source[:, :, :width] = cache_source[:, :, :width]
        return source.squeeze(1), source


class CausalHiFTGenerator(HiFTGenerator):
    causal_padding = 2  # mel frames a non-final hop holds back for the next one

    @torch.inference_mode()
    def inference(self, speech_feat: torch.Tensor,
                  finalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        if not finalize:
            speech_feat = speech_feat[:, :, : -self.causal_padding or None]
        source = self.decode(speech_feat)
        return source.squeeze(1), source
