"""Audio loading and the shared logger (upstream: cosyvoice.utils.file_utils)."""

from __future__ import annotations

import io
import logging as _logging
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch

_logging.basicConfig(level=_logging.WARNING,
                     format="%(asctime)s %(levelname)s %(message)s")
logging = _logging.getLogger("cosyvoice")


def _read_wav(source: Any) -> tuple[np.ndarray, int]:
    """PCM WAV (8/16/32-bit, any channels) -> float32 [channels, samples], sample rate."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with wave.open(str(source) if isinstance(source, Path) else source, "rb") as wav:
        rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
        raw = wav.readframes(wav.getnframes())
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    data = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    if width == 1:
        data = (data - 128.0) / 128.0
    else:
        data /= float(2 ** (8 * width - 1))
    return data.reshape(-1, channels).T.copy(), rate


def resample(speech: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    if orig_sr == target_sr:
        return speech
    length = max(1, int(round(speech.shape[-1] * target_sr / orig_sr)))
    return torch.nn.functional.interpolate(speech.unsqueeze(0), size=length, mode="linear",
                                           align_corners=False).squeeze(0)


def load_wav(wav: Any, target_sr: int, min_sr: int = 16000) -> torch.Tensor:
    """Load a WAV path or file object as mono [1, T] at ``target_sr`` (a tensor passes through)."""
    if isinstance(wav, torch.Tensor):
        speech = wav if wav.dim() == 2 else wav.unsqueeze(0)
        return speech.mean(dim=0, keepdim=True).float()
    data, rate = _read_wav(wav)
    if rate < min_sr:
        raise ValueError(f"wav sample rate {rate} must be at least {min_sr}")
    speech = torch.from_numpy(data).mean(dim=0, keepdim=True)
    return resample(speech, rate, target_sr)


def write_wav(path: str | Path, speech: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM."""
    samples = speech.detach().cpu().numpy() if isinstance(speech, torch.Tensor) else speech
    pcm = (np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1, 1) * 32767)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.astype(np.int16).tobytes())
