"""Text and prompt-audio frontend (upstream: cosyvoice.cli.frontend.CosyVoiceFrontEnd).

Builds the model input for each mode. Prompt audio goes through a speech tokenizer (25 Hz
tokens), a speaker-embedding network (192-d) and a mel feature extractor: tiny torch modules
standing in for upstream's ONNX models.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from typing import Any

import torch
from torch import nn

from cosyvoice.utils.file_utils import load_wav

PROMPT_SR = 16000
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;.])\s*")


def log_mel(speech: torch.Tensor, sample_rate: int, n_mels: int = 80) -> torch.Tensor:
    """[1, T] audio -> [frames, n_mels] log band energies at 50 frames per second."""
    hop = sample_rate // 50
    n_fft = 2 * hop
    if speech.shape[-1] < n_fft:
        speech = torch.nn.functional.pad(speech, (0, n_fft - speech.shape[-1]))
    spec = torch.stft(speech[0], n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft),
                      return_complex=True).abs()  # [bins, frames]
    bands = torch.nn.functional.adaptive_avg_pool1d(spec.T.unsqueeze(0), n_mels)[0]
    return torch.log(bands + 1e-5)


class SpeechTokenizer(nn.Module):
    """16 kHz audio -> discrete speech tokens at 25 Hz."""

    def __init__(self, vocab: int = 64) -> None:
        super().__init__()
        self.proj = nn.Linear(80, vocab)

    @torch.inference_mode()
    def forward(self, speech_16k: torch.Tensor) -> torch.Tensor:
        feats = log_mel(speech_16k, PROMPT_SR)[::2]  # 50 Hz -> 25 Hz
        return self.proj(feats).argmax(dim=-1).unsqueeze(0).to(torch.int32)


class CampPlus(nn.Module):
    """16 kHz audio -> a 192-d speaker embedding."""

    def __init__(self, dim: int = 192) -> None:
        super().__init__()
        self.proj = nn.Linear(80, dim)

    @torch.inference_mode()
    def forward(self, speech_16k: torch.Tensor) -> torch.Tensor:
        emb = self.proj(log_mel(speech_16k, PROMPT_SR).mean(dim=0, keepdim=True))
        return torch.nn.functional.normalize(emb, dim=-1)


class CosyVoiceFrontEnd:
    def __init__(self, speech_tokenizer: SpeechTokenizer, campplus: CampPlus,
                 spk2info: dict[str, dict[str, torch.Tensor]], sample_rate: int,
                 instruct: bool = False, text_vocab: int = 512) -> None:
        self.speech_tokenizer = speech_tokenizer
        self.campplus = campplus
        self.spk2info = spk2info
        self.sample_rate = sample_rate
        self.instruct = instruct
        self.text_vocab = text_vocab

    # -- token and feature extraction
    def _extract_text_token(self, text: Any) -> tuple[Any, torch.Tensor]:
        if isinstance(text, Generator):  # streaming text input: tokens as the text arrives
            return self._extract_text_token_generator(text), torch.tensor([0], dtype=torch.int32)
        ids = [ord(ch) % self.text_vocab for ch in text] or [0]
        token = torch.tensor([ids], dtype=torch.int32)
        return token, torch.tensor([token.shape[1]], dtype=torch.int32)

    def _extract_text_token_generator(self, text_generator: Iterator[str]
                                      ) -> Iterator[torch.Tensor]:
        for text in text_generator:
            token, _ = self._extract_text_token(text)
            for i in range(token.shape[1]):
                yield token[:, i:i + 1]

    def _load_prompt(self, prompt_wav: Any, sample_rate: int) -> torch.Tensor:
        if hasattr(prompt_wav, "seek"):  # a file object is read once per extractor
            prompt_wav.seek(0)
        return load_wav(prompt_wav, sample_rate)

    def _extract_speech_token(self, prompt_wav: Any) -> tuple[torch.Tensor, torch.Tensor]:
        speech = self._load_prompt(prompt_wav, PROMPT_SR)
        token = self.speech_tokenizer(speech)
        return token, torch.tensor([token.shape[1]], dtype=torch.int32)

    def _extract_spk_embedding(self, prompt_wav: Any) -> torch.Tensor:
        return self.campplus(self._load_prompt(prompt_wav, PROMPT_SR))

    def _extract_speech_feat(self, prompt_wav: Any) -> tuple[torch.Tensor, torch.Tensor]:
        feat = log_mel(self._load_prompt(prompt_wav, self.sample_rate), self.sample_rate)
        feat = feat.unsqueeze(0)  # [1, frames, 80]
        return feat, torch.tensor([feat.shape[1]], dtype=torch.int32)

    # -- text
    def text_normalize(self, text: Any, split: bool = True,
                       text_frontend: bool = True) -> list[Any] | str:
        if isinstance(text, Generator):  # streamed text is not normalised (upstream: same)
            return [text]
        if "\x00" in text:  # like many frontends, the error message quotes the input
            raise ValueError(f"text contains a NUL character: {text!r}")
        text = " ".join(text.split()) if text_frontend else text
        if not split:
            return text
        pieces = [p.strip() for p in _SENTENCE_END.split(text) if p.strip()]
        sentences: list[str] = []
        for piece in pieces:  # long sentences are cut at 60 characters
            sentences.extend(piece[i:i + 60] for i in range(0, len(piece), 60))
        return sentences or [text]

    # -- model input per mode
    def _speaker(self, spk_id: str) -> dict[str, torch.Tensor]:
        if spk_id not in self.spk2info:
            raise KeyError(f"unknown speaker {spk_id!r}; available: {sorted(self.spk2info)}")
        return self.spk2info[spk_id]

    def frontend_sft(self, tts_text: str, spk_id: str) -> dict[str, Any]:
        text, text_len = self._extract_text_token(tts_text)
        embedding = self._speaker(spk_id)["embedding"]
        return {"text": text, "text_len": text_len, "llm_embedding": embedding,
                "flow_embedding": embedding}

    def _prompt_inputs(self, prompt_wav: Any) -> dict[str, Any]:
        speech_token, speech_token_len = self._extract_speech_token(prompt_wav)
        speech_feat, speech_feat_len = self._extract_speech_feat(prompt_wav)
        embedding = self._extract_spk_embedding(prompt_wav)
        return {"llm_prompt_speech_token": speech_token,
                "llm_prompt_speech_token_len": speech_token_len,
                "flow_prompt_speech_token": speech_token,
                "flow_prompt_speech_token_len": speech_token_len,
                "prompt_speech_feat": speech_feat, "prompt_speech_feat_len": speech_feat_len,
                "llm_embedding": embedding, "flow_embedding": embedding}

    def frontend_zero_shot(self, tts_text: str, prompt_text: str, prompt_wav: Any,
                           resample_rate: int, zero_shot_spk_id: str) -> dict[str, Any]:
        text, text_len = self._extract_text_token(tts_text)
        if zero_shot_spk_id:
            model_input = dict(self._speaker(zero_shot_spk_id))
        else:
            prompt, prompt_len = self._extract_text_token(prompt_text)
            model_input = {"prompt_text": prompt, "prompt_text_len": prompt_len,
                           **self._prompt_inputs(prompt_wav)}
        model_input.update(text=text, text_len=text_len)
        return model_input

    def frontend_cross_lingual(self, tts_text: str, prompt_wav: Any, resample_rate: int,
                               zero_shot_spk_id: str) -> dict[str, Any]:
        model_input = self.frontend_zero_shot(tts_text, "", prompt_wav, resample_rate,
                                              zero_shot_spk_id)
        # cross-lingual: the prompt's text and speech tokens are not given to the LLM
        for key in ("prompt_text", "prompt_text_len", "llm_prompt_speech_token",
                    "llm_prompt_speech_token_len"):
            model_input.pop(key, None)
        return model_input

    def frontend_instruct(self, tts_text: str, spk_id: str, instruct_text: str) -> dict[str, Any]:
        model_input = self.frontend_sft(tts_text, spk_id)
        model_input.pop("llm_embedding")  # upstream drops the speaker from the LLM in instruct
        instruct, instruct_len = self._extract_text_token(instruct_text + "<endofprompt>")
        model_input.update(prompt_text=instruct, prompt_text_len=instruct_len)
        return model_input

    def frontend_instruct2(self, tts_text: str, instruct_text: str, prompt_wav: Any,
                           resample_rate: int, zero_shot_spk_id: str) -> dict[str, Any]:
        model_input = self.frontend_zero_shot(tts_text, instruct_text + "<|endofprompt|>",
                                              prompt_wav, resample_rate, zero_shot_spk_id)
        model_input.pop("llm_prompt_speech_token", None)
        model_input.pop("llm_prompt_speech_token_len", None)
        return model_input

    def frontend_vc(self, source_speech_16k: Any, prompt_wav: Any,
                    resample_rate: int) -> dict[str, Any]:
        source_token, source_token_len = self._extract_speech_token(source_speech_16k)
        model_input = self._prompt_inputs(prompt_wav)
        model_input.update(source_speech_token=source_token,
                           source_speech_token_len=source_token_len)
        return model_input
