"""The model runners (upstream: cosyvoice.cli.model): CosyVoiceModel, CosyVoice2Model, CosyVoice3Model.

Threading as upstream's: ``tts`` (a generator) starts ``llm_job`` (or ``vc_job`` for voice
conversion) in ANOTHER THREAD with ``threading.Thread``; the job appends speech tokens to a dict
keyed by a per-call uuid while the calling thread polls, turning each hop of tokens into audio
with ``token2wav`` as soon as it is there (stream) or once at the end. ``token2wav`` runs
``self.flow.inference`` then ``self.hift.inference``. Per version, as upstream:

* v1 ``token2wav(token, prompt_token, prompt_feat, embedding, uuid, finalize, speed)``, the flow
  keeps a ``flow_cache``, the vocoder a ``cache_source``, hops overlap;
* v2 overrides ``__init__``, ``token2wav(..., token_offset, uuid, stream, finalize, speed)`` and
  ``tts`` (hops by token offset, ``pre_lookahead_len`` tokens of lookahead), adds ``load_vllm``;
* v3 overrides ``__init__`` and ``token2wav``: the mel so far goes to
  ``hift.inference(speech_feat, finalize)`` and only the new samples are returned.

A text GENERATOR (streaming text input, v2/v3) makes ``llm_job`` call ``llm.inference_bistream``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import torch
from torch.nn import functional as F

from cosyvoice.utils.file_utils import logging

_EMPTY_TOKEN = torch.zeros(1, 0, dtype=torch.int32)
_EMPTY_EMBEDDING = torch.zeros(0, 192)
_EMPTY_FEAT = torch.zeros(1, 0, 80)
POLL_INTERVAL = 0.005  # upstream polls every 0.1 s; the tiny model is much faster


def _slow_hop_knob() -> tuple[int, float] | None:
    """``COSYVOICE_DEMO_SLOW_HOP=INDEX:SECONDS`` (demo only): hop INDEX of each utterance is
    that much slower, in its vocoder call."""
    raw = os.environ.get("COSYVOICE_DEMO_SLOW_HOP", "")
    if not raw:
        return None
    index, _, seconds = raw.partition(":")
    return int(index), float(seconds)


def _before_hop(index: int) -> None:
    knob = _slow_hop_knob()
    if knob is not None and knob[0] == index:
        from cosyvoice.hifigan.generator import SLOW

        SLOW.seconds = knob[1]
Output = Iterator[dict[str, torch.Tensor]]


def _lengths(tensor: torch.Tensor) -> torch.Tensor:
    return torch.tensor([tensor.shape[1]], dtype=torch.int32)


class CosyVoiceModel:
    def __init__(self, llm: torch.nn.Module, flow: torch.nn.Module, hift: torch.nn.Module,
                 fp16: bool = False) -> None:
        self.device = torch.device("cpu")
        self.llm, self.flow, self.hift, self.fp16 = llm, flow, hift, fp16
        self.token_min_hop_len = 2 * self.flow.input_frame_rate // 5  # tiny model: 10 tokens
        self.token_max_hop_len = 4 * self.flow.input_frame_rate // 5
        self.token_overlap_len = 4
        self.mel_overlap_len = self.token_overlap_len * self.flow.token_mel_ratio
        self.lock = threading.Lock()
        self.tts_speech_token_dict: dict[str, list[int]] = {}
        self.llm_end_dict: dict[str, bool] = {}
        self.mel_overlap_dict: dict[str, torch.Tensor] = {}
        self.flow_cache_dict: dict[str, torch.Tensor] = {}
        self.hift_cache_dict: dict[str, Any] = {}
        self.silent_tokens: list[int] = []

    def load(self, llm_model: str, flow_model: str, hift_model: str) -> None:
        for module, path in ((self.llm, llm_model), (self.flow, flow_model),
                             (self.hift, hift_model)):
            module.load_state_dict(torch.load(path, map_location=self.device), strict=True)
            module.to(self.device).eval()

    def load_jit(self, llm_text_encoder_model: str, llm_llm_model: str,
                 flow_encoder_model: str) -> None:
        self._script_flow_encoder(flow_encoder_model)

    def _script_flow_encoder(self, path: str) -> None:
        """Upstream loads TorchScript exports (``torch.jit.load``); the demo has none, so it
        scripts its own encoder: the part is then a TorchScript module, as with the real ones."""
        if os.path.exists(path):
            self.flow.encoder = torch.jit.load(path, map_location=self.device)
        else:
            self.flow.encoder = torch.jit.script(self.flow.encoder)

    def load_trt(self, *args: Any) -> None:
        raise RuntimeError("tensorrt only supports gpu!")

    def llm_job(self, text: Any, prompt_text: torch.Tensor,
                llm_prompt_speech_token: torch.Tensor, llm_embedding: torch.Tensor,
                uuid: str) -> None:
        prompt = {"prompt_text": prompt_text, "prompt_text_len": _lengths(prompt_text),
                  "prompt_speech_token": llm_prompt_speech_token,
                  "prompt_speech_token_len": _lengths(llm_prompt_speech_token),
                  "embedding": llm_embedding}
        try:
            if isinstance(text, Generator):
                if type(self) is CosyVoiceModel or hasattr(self.llm, "vllm"):
                    raise ValueError("streaming input text is only implemented for "
                                     "CosyVoice2/3 and does not support vllm")
                tokens = self.llm.inference_bistream(text=text, **prompt)
            elif isinstance(self, CosyVoice2Model):
                tokens = self.llm.inference(text=text, text_len=_lengths(text), uuid=uuid,
                                            **prompt)
            else:
                tokens = self.llm.inference(text=text, text_len=_lengths(text), **prompt)
            for token in tokens:
                speech_tokens = self.tts_speech_token_dict.get(uuid)
                if speech_tokens is None:  # the caller abandoned the stream
                    break
                speech_tokens.append(token)
        finally:
            with self.lock:
                if uuid in self.llm_end_dict:
                    self.llm_end_dict[uuid] = True

    def vc_job(self, source_speech_token: torch.Tensor, uuid: str) -> None:
        self.tts_speech_token_dict[uuid] = source_speech_token.flatten().tolist()
        self.llm_end_dict[uuid] = True

    def _start_job(self, text: Any, prompt_text: torch.Tensor,
                   llm_prompt_speech_token: torch.Tensor, llm_embedding: torch.Tensor,
                   source_speech_token: torch.Tensor, this_uuid: str) -> threading.Thread:
        if source_speech_token.shape[1] == 0:
            job = threading.Thread(target=self.llm_job, args=(
                text, prompt_text, llm_prompt_speech_token, llm_embedding, this_uuid))
        else:
            job = threading.Thread(target=self.vc_job, args=(source_speech_token, this_uuid))
        job.start()
        return job

    def _forget(self, this_uuid: str) -> None:
        with self.lock:
            for store in (self.tts_speech_token_dict, self.llm_end_dict, self.mel_overlap_dict,
                          self.flow_cache_dict, self.hift_cache_dict):
                store.pop(this_uuid, None)

    def token2wav(self, token: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_feat: torch.Tensor, embedding: torch.Tensor, uuid: str,
                  finalize: bool = False, speed: float = 1.0) -> torch.Tensor:
        tts_mel, self.flow_cache_dict[uuid] = self.flow.inference(
            token=token, token_len=_lengths(token), prompt_token=prompt_token,
            prompt_token_len=_lengths(prompt_token), prompt_feat=prompt_feat,
            prompt_feat_len=_lengths(prompt_feat), embedding=embedding,
            flow_cache=self.flow_cache_dict[uuid])
        cache = self.hift_cache_dict[uuid]
        cache_source = cache["source"] if cache is not None else torch.zeros(1, 1, 0)
        if not finalize:  # the overlap tokens start the next hop: keep their mel for then
            self.mel_overlap_dict[uuid] = tts_mel[:, :, -self.mel_overlap_len:]
            tts_mel = tts_mel[:, :, :-self.mel_overlap_len]
        elif speed != 1.0:
            if cache is not None:
                raise ValueError("speed change only supports non-stream inference")
            tts_mel = F.interpolate(tts_mel, size=max(1, int(tts_mel.shape[2] / speed)),
                                    mode="linear")
        tts_speech, tts_source = self.hift.inference(speech_feat=tts_mel,
                                                     cache_source=cache_source)
        self.hift_cache_dict[uuid] = {"source": tts_source[:, :, -self.hift_hop_samples():]}
        return tts_speech

    def hift_hop_samples(self) -> int:
        return getattr(self.hift, "hop", 1)

    def tts(self, text: Any = _EMPTY_TOKEN, flow_embedding: torch.Tensor = _EMPTY_EMBEDDING,
            llm_embedding: torch.Tensor = _EMPTY_EMBEDDING,
            prompt_text: torch.Tensor = _EMPTY_TOKEN,
            llm_prompt_speech_token: torch.Tensor = _EMPTY_TOKEN,
            flow_prompt_speech_token: torch.Tensor = _EMPTY_TOKEN,
            prompt_speech_feat: torch.Tensor = _EMPTY_FEAT,
            source_speech_token: torch.Tensor = _EMPTY_TOKEN, stream: bool = False,
            speed: float = 1.0, **kwargs: Any) -> Output:
        this_uuid = str(uuid.uuid1())
        with self.lock:
            self.tts_speech_token_dict[this_uuid], self.llm_end_dict[this_uuid] = [], False
            self.hift_cache_dict[this_uuid] = None
            self.mel_overlap_dict[this_uuid] = torch.zeros(1, 80, 0)
            self.flow_cache_dict[this_uuid] = torch.zeros(1, 80, 0, 2)
        job = self._start_job(text, prompt_text, llm_prompt_speech_token, llm_embedding,
                              source_speech_token, this_uuid)
        common = {"prompt_token": flow_prompt_speech_token, "prompt_feat": prompt_speech_feat,
                  "embedding": flow_embedding, "uuid": this_uuid}
        try:
            if stream:
                hop = self.token_min_hop_len
                index = 0
                while True:
                    time.sleep(POLL_INTERVAL)
                    tokens = self.tts_speech_token_dict[this_uuid]
                    if len(tokens) >= hop + self.token_overlap_len:
                        chunk = torch.tensor(tokens[:hop + self.token_overlap_len]).unsqueeze(0)
                        _before_hop(index)
                        index += 1
                        yield {"tts_speech": self.token2wav(token=chunk, finalize=False,
                                                            **common)}
                        with self.lock:  # the hop is spoken: drop its tokens
                            self.tts_speech_token_dict[this_uuid] = tokens[hop:]
                        hop = min(self.token_max_hop_len, hop * 2)
                    if (self.llm_end_dict[this_uuid]
                            and len(self.tts_speech_token_dict[this_uuid])
                            < hop + self.token_overlap_len):
                        break
                job.join()
                rest = torch.tensor(self.tts_speech_token_dict[this_uuid]).unsqueeze(0)
                _before_hop(index)
                yield {"tts_speech": self.token2wav(token=rest, finalize=True, **common)}
            else:
                job.join()
                tokens = torch.tensor(self.tts_speech_token_dict[this_uuid]).unsqueeze(0)
                yield {"tts_speech": self.token2wav(token=tokens, finalize=True, speed=speed,
                                                    **common)}
        finally:
            self._forget(this_uuid)


class CosyVoice2Model(CosyVoiceModel):
    def __init__(self, llm: torch.nn.Module, flow: torch.nn.Module, hift: torch.nn.Module,
                 fp16: bool = False) -> None:
        # upstream's v2 constructor does not call the v1 one; neither does ours
        self.device = torch.device("cpu")
        self.llm, self.flow, self.hift, self.fp16 = llm, flow, hift, fp16
        self.token_hop_len = 12  # upstream: 25 (the training chunk size)
        self.token_max_hop_len = 4 * self.token_hop_len
        self.stream_scale_factor = 2
        self.lock = threading.Lock()
        self.tts_speech_token_dict = {}
        self.llm_end_dict = {}
        self.hift_cache_dict = {}
        self.mel_overlap_dict = {}
        self.flow_cache_dict = {}
        self.silent_tokens = []

    def load_jit(self, flow_encoder_model: str) -> None:
        self._script_flow_encoder(flow_encoder_model)

    def _hop_mel(self, token: torch.Tensor, prompt_token: torch.Tensor,
                 prompt_feat: torch.Tensor, embedding: torch.Tensor, token_offset: int,
                 stream: bool, finalize: bool) -> torch.Tensor:
        """flow.inference on the tokens so far, keeping the frames from ``token_offset`` on."""
        tts_mel, _ = self.flow.inference(
            token=token, token_len=_lengths(token), prompt_token=prompt_token,
            prompt_token_len=_lengths(prompt_token), prompt_feat=prompt_feat,
            prompt_feat_len=_lengths(prompt_feat), embedding=embedding, streaming=stream,
            finalize=finalize)
        return tts_mel[:, :, token_offset * self.flow.token_mel_ratio:]

    def load_vllm(self, model_dir: str) -> None:
        """Serve the LLM through an engine shared by every request. Upstream builds vLLM's
        ``LLMEngine`` from an export in ``model_dir``; the demo uses its CPU stand-in."""
        from cosyvoice.vllm.engine import StepEngine

        self.llm.vllm = StepEngine(self.llm)
        self.llm.lock = threading.Lock()
        logging.info("llm served by the step engine (vLLM stand-in) from %s", model_dir)

    def token2wav(self, token: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_feat: torch.Tensor, embedding: torch.Tensor, token_offset: int,
                  uuid: str, stream: bool = False, finalize: bool = False,
                  speed: float = 1.0) -> torch.Tensor:
        tts_mel = self._hop_mel(token, prompt_token, prompt_feat, embedding, token_offset, stream,
                                finalize)
        cache = self.hift_cache_dict[uuid]
        cache_source = cache["source"] if cache is not None else torch.zeros(1, 1, 0)
        if finalize and speed != 1.0:
            tts_mel = F.interpolate(tts_mel, size=max(1, int(tts_mel.shape[2] / speed)),
                                    mode="linear")
        tts_speech, tts_source = self.hift.inference(speech_feat=tts_mel,
                                                     cache_source=cache_source)
        self.hift_cache_dict[uuid] = {"source": tts_source[:, :, -self.hift_hop_samples():]}
        return tts_speech

    def tts(self, text: Any = _EMPTY_TOKEN, flow_embedding: torch.Tensor = _EMPTY_EMBEDDING,
            llm_embedding: torch.Tensor = _EMPTY_EMBEDDING,
            prompt_text: torch.Tensor = _EMPTY_TOKEN,
            llm_prompt_speech_token: torch.Tensor = _EMPTY_TOKEN,
            flow_prompt_speech_token: torch.Tensor = _EMPTY_TOKEN,
            prompt_speech_feat: torch.Tensor = _EMPTY_FEAT,
            source_speech_token: torch.Tensor = _EMPTY_TOKEN, stream: bool = False,
            speed: float = 1.0, **kwargs: Any) -> Output:
        this_uuid = str(uuid.uuid1())
        with self.lock:
            self.tts_speech_token_dict[this_uuid], self.llm_end_dict[this_uuid] = [], False
            self.hift_cache_dict[this_uuid] = None
        job = self._start_job(text, prompt_text, llm_prompt_speech_token, llm_embedding,
                              source_speech_token, this_uuid)
        common = {"prompt_token": flow_prompt_speech_token, "prompt_feat": prompt_speech_feat,
                  "embedding": flow_embedding, "uuid": this_uuid}
        lookahead = self.flow.pre_lookahead_len
        try:
            token_offset = 0
            index = 0
            if stream:
                hop = self.token_hop_len
                while True:
                    time.sleep(POLL_INTERVAL)
                    tokens = self.tts_speech_token_dict[this_uuid]
                    if len(tokens) - token_offset >= hop + lookahead:
                        chunk = torch.tensor(tokens[:token_offset + hop + lookahead]).unsqueeze(0)
                        _before_hop(index)
                        index += 1
                        speech = self.token2wav(token=chunk, token_offset=token_offset,
                                                stream=True, finalize=False, **common)
                        token_offset += hop
                        hop = min(self.token_max_hop_len, hop * self.stream_scale_factor)
                        yield {"tts_speech": speech}
                    if (self.llm_end_dict[this_uuid]
                            and len(self.tts_speech_token_dict[this_uuid]) - token_offset
                            < hop + lookahead):
                        break
                job.join()
            else:
                job.join()
            tokens = torch.tensor(self.tts_speech_token_dict[this_uuid]).unsqueeze(0)
            _before_hop(index)
            yield {"tts_speech": self.token2wav(token=tokens, token_offset=token_offset,
                                                stream=stream, finalize=True, speed=speed,
                                                **common)}
        finally:
            self._forget(this_uuid)


class CosyVoice3Model(CosyVoice2Model):
    def __init__(self, llm: torch.nn.Module, flow: torch.nn.Module, hift: torch.nn.Module,
                 fp16: bool = False) -> None:
        super().__init__(llm, flow, hift, fp16)
        self.silent_tokens = [1, 2]  # upstream lists its FSQ silence and breath tokens

    def token2wav(self, token: torch.Tensor, prompt_token: torch.Tensor,
                  prompt_feat: torch.Tensor, embedding: torch.Tensor, token_offset: int,
                  uuid: str, stream: bool = False, finalize: bool = False,
                  speed: float = 1.0) -> torch.Tensor:
        tts_mel = self._hop_mel(token, prompt_token, prompt_feat, embedding, token_offset, stream,
                                finalize)
        cache = self.hift_cache_dict[uuid]
        if cache is not None:  # the vocoder sees all the mel so far, causally
            tts_mel = torch.cat([cache["mel"], tts_mel], dim=2)
            cache["mel"] = tts_mel
        else:
            cache = self.hift_cache_dict[uuid] = {"mel": tts_mel, "speech_offset": 0}
        if speed != 1.0:
            if token_offset != 0 or not finalize:
                raise ValueError("speed change only supports non-stream inference")
            tts_mel = F.interpolate(tts_mel, size=max(1, int(tts_mel.shape[2] / speed)),
                                    mode="linear")
        tts_speech, _ = self.hift.inference(speech_feat=tts_mel, finalize=finalize)
        tts_speech = tts_speech[:, cache["speech_offset"]:]
        cache["speech_offset"] += tts_speech.shape[1]
        return tts_speech
