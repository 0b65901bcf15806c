"""Flow matching: speech tokens -> mel spectrogram (upstream: cosyvoice.flow.flow).

A few Euler steps of a tiny convolutional velocity estimator, conditioned on the token encoding
and the speaker embedding. Two mel frames per token (50 Hz mel for 25 Hz tokens).
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedDiffWithXvec(nn.Module):
    """CosyVoice 1 flow."""

    def __init__(self, speech_vocab: int = 64, mel_dim: int = 80, channels: int = 96,
                 spk_dim: int = 192, token_mel_ratio: int = 2, n_steps: int = 8) -> None:
        super().__init__()
        self.input_frame_rate = 25
        self.token_mel_ratio = token_mel_ratio
        self.n_steps = n_steps
        self.input_embedding = nn.Embedding(speech_vocab, mel_dim)
        self.spk_embed_affine_layer = nn.Linear(spk_dim, mel_dim)
        self.estimator = nn.Sequential(
            nn.Conv1d(2 * mel_dim, channels, 5, padding=2), nn.SiLU(),
            nn.Conv1d(channels, channels, 5, padding=2), nn.SiLU(),
            nn.Conv1d(channels, mel_dim, 5, padding=2))

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, token_len: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_token_len: torch.Tensor, prompt_feat: torch.Tensor,
                  prompt_feat_len: torch.Tensor, embedding: torch.Tensor,
                  flow_cache: torch.Tensor | None = None, streaming: bool = False,
                  finalize: bool = True, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        token = token.clamp(0, self.input_embedding.num_embeddings - 1)
        mu = self.input_embedding(token).transpose(1, 2)  # [1, mel, T]
        mu = torch.repeat_interleave(mu, self.token_mel_ratio, dim=2)
        if embedding.numel():
            spk = self.spk_embed_affine_layer(embedding.reshape(1, -1)[:, :192])
            mu = mu + spk.unsqueeze(-1)
        x = torch.randn_like(mu)
        dt = 1.0 / self.n_steps
        for _ in range(self.n_steps):
            x = x + dt * self.estimator(torch.cat([x, mu], dim=1))
        cache = flow_cache if flow_cache is not None else torch.zeros(1, 80, 0, 2)
        return x, cache


class CausalMaskedDiffWithXvec(MaskedDiffWithXvec):
    """CosyVoice 2/3 flow (causal in upstream; the same tiny network here)."""
