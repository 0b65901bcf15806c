"""The acoustic model: text tokens -> speech tokens, one token per step (upstream: cosyvoice.llm.llm).

``inference`` is a generator, like upstream's: the model's LLM job iterates it in a worker thread.
The number of speech tokens follows the text length (``tokens_per_char``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


class TransformerLM(nn.Module):
    """CosyVoice 1 LLM (tiny: an embedding, a GRU encoder and a GRU-cell decoder)."""

    def __init__(self, text_vocab: int = 512, speech_vocab: int = 64, dim: int = 128,
                 spk_dim: int = 192, tokens_per_char: float = 2.0) -> None:
        super().__init__()
        self.speech_vocab = speech_vocab
        self.tokens_per_char = tokens_per_char
        self.text_embedding = nn.Embedding(text_vocab, dim)
        self.speech_embedding = nn.Embedding(speech_vocab + 1, dim)  # + start token
        self.encoder = nn.GRU(dim, dim, batch_first=True)
        self.decoder = nn.GRUCell(dim, dim)
        self.spk_affine = nn.Linear(spk_dim, dim)
        self.head = nn.Linear(dim, speech_vocab)

    @torch.inference_mode()
    def inference(self, text: torch.Tensor, text_len: torch.Tensor,
                  prompt_text: torch.Tensor, prompt_text_len: torch.Tensor,
                  prompt_speech_token: torch.Tensor, prompt_speech_token_len: torch.Tensor,
                  embedding: torch.Tensor, sampling: int = 8, **kwargs) -> Iterator[int]:
        tokens = torch.cat([prompt_text, text], dim=1).clamp(0, self.text_embedding.num_embeddings - 1)
        _, hidden = self.encoder(self.text_embedding(tokens))
        state = hidden[0]
        if embedding.numel():
            state = state + self.spk_affine(embedding.reshape(1, -1)[:, : self.spk_affine.in_features])
        steps = max(4, int(int(text_len.reshape(-1)[0]) * self.tokens_per_char))
        token = torch.full((1,), self.speech_vocab, dtype=torch.long)
        for _ in range(steps):
            state = self.decoder(self.speech_embedding(token), state)
            logits = self.head(state)
            top = torch.topk(logits, k=min(sampling, self.speech_vocab), dim=-1)
            pick = torch.multinomial(torch.softmax(top.values, dim=-1), 1)
            token = top.indices.gather(-1, pick).reshape(1)
            yield int(token)


class Qwen2LM(TransformerLM):
    """CosyVoice 2/3 LLM (same tiny network; upstream's is a Qwen2 decoder)."""
