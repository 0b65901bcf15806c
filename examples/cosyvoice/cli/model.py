"""The model runner (upstream: cosyvoice.cli.model.CosyVoiceModel and subclasses).

``tts`` is a generator. It starts the LLM job in ANOTHER THREAD (``threading.Thread``), which
appends speech tokens to a dict keyed by a per-call uuid, while the calling thread polls; in
stream mode it turns each hop of tokens into audio as soon as it is there (``token2wav`` per
hop), otherwise once at the end. ``token2wav`` runs the flow then the vocoder.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn import functional as F

_EMPTY_TOKEN = torch.zeros(1, 0, dtype=torch.int32)
_EMPTY_EMBEDDING = torch.zeros(0, 192)
_EMPTY_FEAT = torch.zeros(1, 0, 80)


class CosyVoiceModel:
    token_hop_len = 10        # tokens per streamed chunk
    pre_lookahead_len = 3     # extra tokens the flow sees beyond the hop
    poll_interval = 0.005     # upstream polls every 0.1 s; the tiny model is much faster

    def __init__(self, llm: torch.nn.Module, flow: torch.nn.Module,
                 hift: torch.nn.Module, fp16: bool = False) -> None:
        self.device = torch.device("cpu")
        self.llm, self.flow, self.hift, self.fp16 = llm, flow, hift, fp16
        self.lock = threading.Lock()
        self.tts_speech_token_dict: dict[str, list[int]] = {}
        self.llm_end_dict: dict[str, bool] = {}

    def load(self, llm_model: str, flow_model: str, hift_model: str) -> None:
        for module, path in ((self.llm, llm_model), (self.flow, flow_model),
                             (self.hift, hift_model)):
            module.load_state_dict(torch.load(path, map_location=self.device), strict=True)
            module.to(self.device).eval()

    def llm_job(self, text: torch.Tensor, prompt_text: torch.Tensor,
                llm_prompt_speech_token: torch.Tensor, llm_embedding: torch.Tensor,
                uuid: str) -> None:
        try:
            for token in self.llm.inference(
                    text=text, text_len=torch.tensor([text.shape[1]], dtype=torch.int32),
                    prompt_text=prompt_text,
                    prompt_text_len=torch.tensor([prompt_text.shape[1]], dtype=torch.int32),
                    prompt_speech_token=llm_prompt_speech_token,
                    prompt_speech_token_len=torch.tensor([llm_prompt_speech_token.shape[1]],
                                                         dtype=torch.int32),
                    embedding=llm_embedding):
                tokens = self.tts_speech_token_dict.get(uuid)
                if tokens is None:  # the caller abandoned the stream
                    break
                tokens.append(token)
        finally:
            with self.lock:
                if uuid in self.llm_end_dict:
                    self.llm_end_dict[uuid] = True

    def vc_job(self, source_speech_token: torch.Tensor, uuid: str) -> None:
        self.tts_speech_token_dict[uuid] = source_speech_token.flatten().tolist()
        self.llm_end_dict[uuid] = True

    def token2wav(self, token: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_feat: torch.Tensor, embedding: torch.Tensor, uuid: str,
                  token_offset: int = 0, finalize: bool = False, stream: bool = False,
                  speed: float = 1.0) -> torch.Tensor:
        tts_mel, _ = self.flow.inference(
            token=token, token_len=torch.tensor([token.shape[1]], dtype=torch.int32),
            prompt_token=prompt_token,
            prompt_token_len=torch.tensor([prompt_token.shape[1]], dtype=torch.int32),
            prompt_feat=prompt_feat,
            prompt_feat_len=torch.tensor([prompt_feat.shape[1]], dtype=torch.int32),
            embedding=embedding, streaming=stream, finalize=finalize)
        # keep only the frames of this hop (the flow saw the lookahead too)
        ratio = self.flow.token_mel_ratio
        tts_mel = tts_mel[:, :, token_offset * ratio:]
        if not finalize:
            tts_mel = tts_mel[:, :, : self.token_hop_len * ratio]
        if speed != 1.0:
            tts_mel = F.interpolate(tts_mel, size=max(1, int(tts_mel.shape[2] / speed)),
                                    mode="linear")
        tts_speech, _ = self.hift.inference(speech_feat=tts_mel)
        return tts_speech

    def tts(self, text: torch.Tensor = _EMPTY_TOKEN, flow_embedding: torch.Tensor = _EMPTY_EMBEDDING,
            llm_embedding: torch.Tensor = _EMPTY_EMBEDDING, prompt_text: torch.Tensor = _EMPTY_TOKEN,
            llm_prompt_speech_token: torch.Tensor = _EMPTY_TOKEN,
            flow_prompt_speech_token: torch.Tensor = _EMPTY_TOKEN,
            prompt_speech_feat: torch.Tensor = _EMPTY_FEAT,
            source_speech_token: torch.Tensor = _EMPTY_TOKEN, stream: bool = False,
            speed: float = 1.0, **kwargs: Any) -> Iterator[dict[str, torch.Tensor]]:
        this_uuid = str(uuid.uuid1())
        with self.lock:
            self.tts_speech_token_dict[this_uuid], self.llm_end_dict[this_uuid] = [], False
        if source_speech_token.shape[1] == 0:
            job = threading.Thread(target=self.llm_job, args=(
                text, prompt_text, llm_prompt_speech_token, llm_embedding, this_uuid))
        else:
            job = threading.Thread(target=self.vc_job, args=(source_speech_token, this_uuid))
        job.start()
        common = {"prompt_token": flow_prompt_speech_token, "prompt_feat": prompt_speech_feat,
                  "embedding": flow_embedding, "uuid": this_uuid}
        try:
            if stream:
                token_offset = 0
                while True:
                    time.sleep(self.poll_interval)
                    tokens = self.tts_speech_token_dict[this_uuid]
                    needed = token_offset + self.token_hop_len + self.pre_lookahead_len
                    if len(tokens) >= needed:
                        chunk = torch.tensor(tokens[:needed]).unsqueeze(0)
                        speech = self.token2wav(token=chunk, token_offset=token_offset,
                                                finalize=False, stream=True, **common)
                        token_offset += self.token_hop_len
                        yield {"tts_speech": speech}
                    if self.llm_end_dict[this_uuid] and len(tokens) < needed:
                        break
                job.join()
                tokens = self.tts_speech_token_dict[this_uuid]
                if len(tokens) > token_offset:
                    speech = self.token2wav(token=torch.tensor(tokens).unsqueeze(0),
                                            token_offset=token_offset, finalize=True,
                                            stream=True, **common)
                    yield {"tts_speech": speech}
            else:
                job.join()
                tokens = torch.tensor(self.tts_speech_token_dict[this_uuid]).unsqueeze(0)
                yield {"tts_speech": self.token2wav(token=tokens, finalize=True, speed=speed,
                                                    **common)}
        finally:
            with self.lock:
                self.tts_speech_token_dict.pop(this_uuid, None)
                self.llm_end_dict.pop(this_uuid, None)


class CosyVoice2Model(CosyVoiceModel):
    token_hop_len = 12


class CosyVoice3Model(CosyVoice2Model):
    pass
