"""The vocoder: mel spectrogram -> waveform (upstream: cosyvoice.hifigan.generator)."""

from __future__ import annotations

import torch
from torch import nn


class HiFTGenerator(nn.Module):
    """HiFT vocoder (tiny: a conv and one transposed conv upsampling by the hop size)."""

    def __init__(self, in_channels: int = 80, channels: int = 64,
                 sampling_rate: int = 24000, frame_rate: int = 50) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.hop = sampling_rate // frame_rate
        self.conv_pre = nn.Conv1d(in_channels, channels, 3, padding=1)
        self.upsample = nn.ConvTranspose1d(channels, 1, kernel_size=self.hop, stride=self.hop)

    @torch.inference_mode()
    def inference(self, speech_feat: torch.Tensor,
                  cache_source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.tanh(self.conv_pre(speech_feat))
        source = 0.5 * torch.tanh(self.upsample(hidden))  # [1, 1, frames * hop]
        return source.squeeze(1), source
