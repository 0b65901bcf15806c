"""The acoustic model: text tokens -> speech tokens (upstream: cosyvoice.llm.llm).

Class graph as upstream's: ``TransformerLM`` (CosyVoice 1), ``Qwen2LM(TransformerLM)`` (CosyVoice 2,
overrides ``inference`` and decodes through ``inference_wrapper``, which uses a vLLM engine when
``load_vllm`` gave it one; adds ``inference_bistream`` for a text GENERATOR), ``CosyVoice3LM(Qwen2LM)``
(CosyVoice 3, its own constructor only). Every ``inference*`` is a generator of int tokens that
the model's LLM job iterates in a worker thread. The networks are tiny and random.
"""

from __future__ import annotations

import queue
from collections.abc import Generator, Iterator

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

    # -- shared tiny network steps (our own; upstream's are transformer/Qwen2 layers)
    def _encode(self, text: torch.Tensor, embedding: torch.Tensor,
                state: torch.Tensor | None = None) -> torch.Tensor:
        tokens = text.clamp(0, self.text_embedding.num_embeddings - 1)
        _, hidden = self.encoder(self.text_embedding(tokens),
                                 None if state is None else state.unsqueeze(0))
        state = hidden[0]
        if embedding.numel():
            spk = self.spk_affine(embedding.reshape(1, -1)[:, : self.spk_affine.in_features])
            state = state + spk
        return state

    def _step(self, state: torch.Tensor, token: torch.Tensor,
              sampling: int) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.decoder(self.speech_embedding(token), state)
        top = torch.topk(self.head(state), k=min(sampling, self.speech_vocab), dim=-1)
        pick = torch.multinomial(torch.softmax(top.values, dim=-1), 1)
        return state, top.indices.gather(-1, pick).reshape(1)

    def _start_token(self) -> torch.Tensor:
        return torch.full((1,), self.speech_vocab, dtype=torch.long)

    def _decode(self, state: torch.Tensor, steps: int, sampling: int) -> Iterator[int]:
        token = self._start_token()
        for _ in range(steps):
            state, token = self._step(state, token, sampling)
            yield int(token)

    def _length(self, text_len: torch.Tensor) -> int:
        return max(4, int(int(text_len.reshape(-1)[0]) * self.tokens_per_char))

    @torch.inference_mode()
    def inference(self, text: torch.Tensor, text_len: torch.Tensor, prompt_text: torch.Tensor,
                  prompt_text_len: torch.Tensor, prompt_speech_token: torch.Tensor,
                  prompt_speech_token_len: torch.Tensor, embedding: torch.Tensor,
                  sampling: int = 25, max_token_text_ratio: float = 20,
                  min_token_text_ratio: float = 2) -> Iterator[int]:
        state = self._encode(torch.cat([prompt_text, text], dim=1), embedding)
        yield from self._decode(state, self._length(text_len), sampling)


class Qwen2LM(TransformerLM):
    """CosyVoice 2 LLM (same tiny network; upstream's is a Qwen2 decoder)."""

    mix_ratio = (5, 15)  # streamed text input: 15 speech tokens per 5 text tokens

    def __init__(self, text_vocab: int = 512, speech_vocab: int = 64, dim: int = 128,
                 spk_dim: int = 192, tokens_per_char: float = 2.0) -> None:
        super().__init__(text_vocab, speech_vocab, dim, spk_dim, tokens_per_char)
        self.vllm_output_queue: dict[str, queue.Queue] = {}

    @torch.inference_mode()
    def inference(self, text: torch.Tensor, text_len: torch.Tensor, prompt_text: torch.Tensor,
                  prompt_text_len: torch.Tensor, prompt_speech_token: torch.Tensor,
                  prompt_speech_token_len: torch.Tensor, embedding: torch.Tensor,
                  sampling: int = 25, max_token_text_ratio: float = 20,
                  min_token_text_ratio: float = 2, uuid: str = "") -> Iterator[int]:
        lm_input = self._encode(torch.cat([prompt_text, text], dim=1), embedding)
        length = self._length(text_len)
        yield from self.inference_wrapper(lm_input, sampling, length, length, uuid)

    @torch.inference_mode()
    def inference_wrapper(self, lm_input: torch.Tensor, sampling: int, min_len: int,
                          max_len: int, uuid: str) -> Iterator[int]:
        if not hasattr(self, "vllm"):
            yield from self._decode(lm_input, max_len, sampling)
            return
        # the shared engine steps every request it holds; each step's outputs are sorted into
        # per-request queues (upstream does the same around vLLM's LLMEngine)
        with self.lock:
            self.vllm.add_request(uuid, lm_input, max_len, sampling)
            self.vllm_output_queue[uuid] = queue.Queue()
        try:
            while True:
                with self.lock:
                    if self.vllm_output_queue[uuid].empty():
                        for request_id, token, finished in self.vllm.step():
                            self.vllm_output_queue[request_id].put((token, finished))
                if self.vllm_output_queue[uuid].empty():
                    continue
                token, finished = self.vllm_output_queue[uuid].get()
                if token is not None:
                    yield token
                if finished:
                    break
        finally:
            with self.lock:
                self.vllm_output_queue.pop(uuid, None)

    @torch.inference_mode()
    def inference_bistream(self, text: Generator, prompt_text: torch.Tensor,
                           prompt_text_len: torch.Tensor, prompt_speech_token: torch.Tensor,
                           prompt_speech_token_len: torch.Tensor, embedding: torch.Tensor,
                           sampling: int = 25, max_token_text_ratio: float = 20,
                           min_token_text_ratio: float = 2) -> Iterator[int]:
        """Text arrives as a generator of [1, 1] text-token tensors; speech tokens are
        produced while it streams (``mix_ratio``), the rest once it is exhausted."""
        text_ratio, speech_ratio = self.mix_ratio
        state = self._encode(prompt_text, embedding) if prompt_text.shape[1] else None
        pending: list[torch.Tensor] = []
        token = self._start_token()
        for text_token in text:
            pending.append(text_token.reshape(1, -1))
            if len(pending) < text_ratio:
                continue
            state = self._encode(torch.cat(pending, dim=1), embedding, state)
            pending.clear()
            for _ in range(speech_ratio):
                state, token = self._step(state, token, sampling)
                yield int(token)
        if pending:
            state = self._encode(torch.cat(pending, dim=1), embedding, state)
            for _ in range(len(pending) * speech_ratio // text_ratio + 1):
                state, token = self._step(state, token, sampling)
                yield int(token)


class CosyVoice3LM(Qwen2LM):
    """CosyVoice 3 LLM: upstream gives it its own constructor and inherits the rest."""

    def __init__(self, text_vocab: int = 512, speech_vocab: int = 64, dim: int = 128,
                 spk_dim: int = 192, tokens_per_char: float = 2.0) -> None:
        super().__init__(text_vocab, speech_vocab, dim, spk_dim, tokens_per_char)
