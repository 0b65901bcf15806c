"""The public API (upstream: cosyvoice.cli.cosyvoice): AutoModel, CosyVoice, CosyVoice2, CosyVoice3.

Every ``inference_*`` method is a generator of ``{'tts_speech': tensor [1, T]}``: it normalises
and splits the text, builds the model input per sentence with the frontend, and runs
``model.tts`` per sentence.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from cosyvoice.cli.frontend import CampPlus, CosyVoiceFrontEnd, SpeechTokenizer
from cosyvoice.cli.model import CosyVoice2Model, CosyVoice3Model, CosyVoiceModel
from cosyvoice.utils.config import load_model_config
from cosyvoice.utils.file_utils import logging

Output = Iterator[dict[str, torch.Tensor]]


class CosyVoice:
    config_name = "cosyvoice.yaml"
    model_cls: type = CosyVoiceModel

    def __init__(self, model_dir: str, load_jit: bool = False, load_trt: bool = False,
                 fp16: bool = False, trt_concurrent: int = 1) -> None:
        self._load(model_dir, load_jit=load_jit, load_trt=load_trt, fp16=fp16)

    def _load(self, model_dir: str, load_jit: bool = False, load_trt: bool = False,
              load_vllm: bool = False, fp16: bool = False) -> None:
        """What upstream's three constructors each do: read the config (it instantiates the
        llm, flow and hift classes it names), build the frontend and the model, load weights."""
        if not os.path.isdir(model_dir):
            raise ValueError(f"model_dir {model_dir!r} is not a directory (this demo engine never "
                             "downloads; create one with examples/make_tiny_model.py)")
        self.model_dir = model_dir
        path = os.path.join(model_dir, self.config_name)
        if not os.path.exists(path):
            raise ValueError(f"{path} not found!")
        configs = load_model_config(path)
        self.sample_rate = int(configs["sample_rate"])
        self.instruct = bool(configs.get("instruct", False))
        tokenizer = SpeechTokenizer(int(configs["speech_vocab"]))
        campplus = CampPlus()
        tokenizer.load_state_dict(torch.load(os.path.join(model_dir, "speech_tokenizer.pt")))
        campplus.load_state_dict(torch.load(os.path.join(model_dir, "campplus.pt")))
        spk2info = torch.load(os.path.join(model_dir, "spk2info.pt"))
        self.frontend = CosyVoiceFrontEnd(tokenizer.eval(), campplus.eval(), spk2info,
                                          self.sample_rate, self.instruct,
                                          int(configs["text_vocab"]))
        if load_trt or fp16:  # upstream: the same on a machine without CUDA
            logging.warning("no cuda device, set load_trt/fp16 to False")
        self.fp16 = False
        self.model = self.model_cls(configs["llm"], configs["flow"], configs["hift"], False)
        self.model.load(*(os.path.join(model_dir, f"{n}.pt") for n in ("llm", "flow", "hift")))
        if load_vllm:
            self.model.load_vllm(os.path.join(model_dir, "vllm"))
        if load_jit:  # upstream: GPU only; the demo scripts its flow encoder on any device
            encoder = os.path.join(model_dir, "flow.encoder.fp32.zip")
            if isinstance(self.model, CosyVoice2Model):
                self.model.load_jit(encoder)
            else:
                self.model.load_jit(os.path.join(model_dir, "llm.text_encoder.fp32.zip"),
                                    os.path.join(model_dir, "llm.llm.fp32.zip"), encoder)

    def list_available_spks(self) -> list[str]:
        return list(self.frontend.spk2info.keys())

    list_avaliable_spks = list_available_spks  # upstream's historical spelling

    def add_zero_shot_spk(self, prompt_text: str, prompt_wav: Any, zero_shot_spk_id: str) -> bool:
        if not zero_shot_spk_id:
            raise ValueError("zero_shot_spk_id must not be empty")
        model_input = self.frontend.frontend_zero_shot("", prompt_text, prompt_wav,
                                                       self.sample_rate, "")
        del model_input["text"], model_input["text_len"]
        self.frontend.spk2info[zero_shot_spk_id] = model_input
        return True

    def _run(self, sentences: list[str], build: Any, stream: bool, speed: float) -> Output:
        for sentence in sentences:
            model_input = build(sentence)
            start = time.time()
            for model_output in self.model.tts(**model_input, stream=stream, speed=speed):
                speech_len = model_output["tts_speech"].shape[1] / self.sample_rate
                logging.info("yield speech len %.2f, rtf %.3f", speech_len,
                             (time.time() - start) / max(speech_len, 1e-6))
                yield model_output
                start = time.time()

    def inference_sft(self, tts_text: str, spk_id: str, stream: bool = False,
                      speed: float = 1.0, text_frontend: bool = True) -> Output:
        sentences = self.frontend.text_normalize(tts_text, split=True, text_frontend=text_frontend)
        yield from self._run(sentences, lambda s: self.frontend.frontend_sft(s, spk_id),
                             stream, speed)

    def inference_zero_shot(self, tts_text: str, prompt_text: str, prompt_wav: Any,
                            zero_shot_spk_id: str = "", stream: bool = False, speed: float = 1.0,
                            text_frontend: bool = True) -> Output:
        prompt_text = self.frontend.text_normalize(prompt_text, split=False,
                                                   text_frontend=text_frontend)
        sentences = self.frontend.text_normalize(tts_text, split=True, text_frontend=text_frontend)
        yield from self._run(sentences, lambda s: self.frontend.frontend_zero_shot(
            s, prompt_text, prompt_wav, self.sample_rate, zero_shot_spk_id), stream, speed)

    def inference_cross_lingual(self, tts_text: str, prompt_wav: Any, zero_shot_spk_id: str = "",
                                stream: bool = False, speed: float = 1.0,
                                text_frontend: bool = True) -> Output:
        sentences = self.frontend.text_normalize(tts_text, split=True, text_frontend=text_frontend)
        yield from self._run(sentences, lambda s: self.frontend.frontend_cross_lingual(
            s, prompt_wav, self.sample_rate, zero_shot_spk_id), stream, speed)

    def inference_instruct(self, tts_text: str, spk_id: str, instruct_text: str,
                           stream: bool = False, speed: float = 1.0,
                           text_frontend: bool = True) -> Output:
        if type(self).__name__ != "CosyVoice":  # upstream asserts the same
            raise NotImplementedError("inference_instruct is only implemented for CosyVoice; "
                                      "use inference_instruct2")
        instruct_text = self.frontend.text_normalize(instruct_text, split=False,
                                                     text_frontend=text_frontend)
        sentences = self.frontend.text_normalize(tts_text, split=True, text_frontend=text_frontend)
        yield from self._run(sentences, lambda s: self.frontend.frontend_instruct(
            s, spk_id, instruct_text), stream, speed)

    def inference_vc(self, source_wav: Any, prompt_wav: Any, stream: bool = False,
                     speed: float = 1.0) -> Output:
        model_input = self.frontend.frontend_vc(source_wav, prompt_wav, self.sample_rate)
        yield from self.model.tts(**model_input, stream=stream, speed=speed)


class CosyVoice2(CosyVoice):
    config_name = "cosyvoice2.yaml"
    model_cls = CosyVoice2Model

    def __init__(self, model_dir: str, load_jit: bool = False, load_trt: bool = False,
                 load_vllm: bool = False, fp16: bool = False, trt_concurrent: int = 1) -> None:
        self._load(model_dir, load_jit=load_jit, load_trt=load_trt, load_vllm=load_vllm,
                   fp16=fp16)

    def inference_instruct2(self, tts_text: str, instruct_text: str, prompt_wav: Any,
                            zero_shot_spk_id: str = "", stream: bool = False, speed: float = 1.0,
                            text_frontend: bool = True) -> Output:
        sentences = self.frontend.text_normalize(tts_text, split=True, text_frontend=text_frontend)
        yield from self._run(sentences, lambda s: self.frontend.frontend_instruct2(
            s, instruct_text, prompt_wav, self.sample_rate, zero_shot_spk_id), stream, speed)


class CosyVoice3(CosyVoice2):
    config_name = "cosyvoice3.yaml"
    model_cls = CosyVoice3Model

    def __init__(self, model_dir: str, load_trt: bool = False, load_vllm: bool = False,
                 fp16: bool = False, trt_concurrent: int = 1) -> None:
        self._load(model_dir, load_trt=load_trt, load_vllm=load_vllm, fp16=fp16)


def AutoModel(**kwargs: Any) -> CosyVoice:  # noqa: N802 - upstream's name
    """Pick the class by the marker file in ``model_dir``, as upstream does."""
    model_dir = kwargs["model_dir"]
    for cls in (CosyVoice, CosyVoice2, CosyVoice3):  # upstream's order
        if os.path.exists(os.path.join(model_dir, cls.config_name)):
            return cls(**kwargs)
    raise TypeError(f"no cosyvoice.yaml, cosyvoice2.yaml or cosyvoice3.yaml in {model_dir!r}")
