"""Flow matching: speech tokens -> mel spectrogram (upstream: cosyvoice.flow.flow).

Three classes, each a direct ``torch.nn.Module`` as upstream's are (none inherits another):
``MaskedDiffWithXvec`` (CosyVoice 1: ``inference(..., embedding, flow_cache)`` returns the mel and
the cache), ``CausalMaskedDiffWithXvec`` (CosyVoice 2) and ``CausalMaskedDiffWithDiT`` (CosyVoice 3),
both ``inference(..., embedding, streaming, finalize)``. A few Euler steps of a tiny convolutional
velocity estimator; two mel frames per token (50 Hz mel for 25 Hz tokens).
"""

from __future__ import annotations

import torch
from torch import nn


def _build(module: nn.Module, speech_vocab: int, mel_dim: int, channels: int, spk_dim: int,
           token_mel_ratio: int, n_steps: int, pre_lookahead_len: int) -> None:
    module.input_frame_rate = 25
    module.token_mel_ratio = token_mel_ratio
    module.pre_lookahead_len = pre_lookahead_len
    module.n_steps = n_steps
    module.input_embedding = nn.Embedding(speech_vocab, mel_dim)
    # upstream's token encoder; load_jit swaps it for a TorchScript module (no weights here)
    module.encoder = nn.Identity()
    module.spk_embed_affine_layer = nn.Linear(spk_dim, mel_dim)
    module.estimator = nn.Sequential(
        nn.Conv1d(2 * mel_dim, channels, 5, padding=2), nn.SiLU(),
        nn.Conv1d(channels, channels, 5, padding=2), nn.SiLU(),
        nn.Conv1d(channels, mel_dim, 5, padding=2))


def _solve(module: nn.Module, token: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """tokens [1, T] -> mel [1, 80, T * token_mel_ratio]."""
    token = token.clamp(0, module.input_embedding.num_embeddings - 1)
    mu = module.encoder(module.input_embedding(token)).transpose(1, 2)
    mu = torch.repeat_interleave(mu, module.token_mel_ratio, dim=2)
    if embedding.numel():
        mu = mu + module.spk_embed_affine_layer(embedding.reshape(1, -1)[:, :192]).unsqueeze(-1)
    x = torch.randn_like(mu)
    dt = 1.0 / module.n_steps
    for _ in range(module.n_steps):
        x = x + dt * module.estimator(torch.cat([x, mu], dim=1))
    return x


def _causal(module: nn.Module, token: torch.Tensor, embedding: torch.Tensor,
            finalize: bool) -> torch.Tensor:
    """The causal flows' mel: a non-final hop drops the frames of its lookahead tokens (they
    only condition this hop; the next hop speaks them)."""
    mel = _solve(module, token, embedding)
    if not finalize:
        mel = mel[:, :, : -module.pre_lookahead_len * module.token_mel_ratio or None]
    return mel


class MaskedDiffWithXvec(nn.Module):
    """CosyVoice 1 flow."""

    def __init__(self, speech_vocab: int = 64, mel_dim: int = 80, channels: int = 96,
                 spk_dim: int = 192, token_mel_ratio: int = 2, n_steps: int = 8) -> None:
        super().__init__()
        _build(self, speech_vocab, mel_dim, channels, spk_dim, token_mel_ratio, n_steps, 0)

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, token_len: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_token_len: torch.Tensor, prompt_feat: torch.Tensor,
                  prompt_feat_len: torch.Tensor, embedding: torch.Tensor,
                  flow_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _solve(self, token, embedding), flow_cache


class CausalMaskedDiffWithXvec(nn.Module):
    """CosyVoice 2 flow (causal in upstream; the same tiny network here)."""

    def __init__(self, speech_vocab: int = 64, mel_dim: int = 80, channels: int = 96,
                 spk_dim: int = 192, token_mel_ratio: int = 2, n_steps: int = 8,
                 pre_lookahead_len: int = 3) -> None:
        super().__init__()
        _build(self, speech_vocab, mel_dim, channels, spk_dim, token_mel_ratio, n_steps,
               pre_lookahead_len)

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, token_len: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_token_len: torch.Tensor, prompt_feat: torch.Tensor,
                  prompt_feat_len: torch.Tensor, embedding: torch.Tensor, streaming: bool,
                  finalize: bool) -> tuple[torch.Tensor, None]:
        return _causal(self, token, embedding, finalize), None


class CausalMaskedDiffWithDiT(nn.Module):
    """CosyVoice 3 flow (a DiT estimator in upstream; the same tiny network here)."""

    def __init__(self, speech_vocab: int = 64, mel_dim: int = 80, channels: int = 96,
                 spk_dim: int = 192, token_mel_ratio: int = 2, n_steps: int = 8,
                 pre_lookahead_len: int = 3) -> None:
        super().__init__()
        _build(self, speech_vocab, mel_dim, channels, spk_dim, token_mel_ratio, n_steps,
               pre_lookahead_len)

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, token_len: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_token_len: torch.Tensor, prompt_feat: torch.Tensor,
                  prompt_feat_len: torch.Tensor, embedding: torch.Tensor, streaming: bool,
                  finalize: bool) -> tuple[torch.Tensor, None]:
        return _causal(self, token, embedding, finalize), None
