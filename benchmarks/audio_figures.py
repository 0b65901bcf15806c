"""What the prompt's six quality figures cost, beside the prompt-audio stage they ride on.

    .venv-cosyvoice/bin/python benchmarks/audio_figures.py [--repeat 30]

The real engine (upstream's frontend from PyPI's ``cosyvoice-minicpmo``, the tiny v2 model of
``examples/make_real_model.py``): for prompts of 3, 10 and 30 s (16 kHz, speech-like: noise
bursts with pauses), the median time of the prompt-audio work upstream's ``frontend_zero_shot``
does (resample, ``_extract_speech_feat``, ``_extract_speech_token``, ``_extract_spk_embedding``:
the three ``audio_preprocess.*`` stages) and of ``audio_figures.measure`` on the same tensor
(measured once per request: the three stages share it). Interleaved, one process.

The tiny model's ONNX tokenizer and speaker model are far smaller than the real ones (the mel,
fbank and resampling work is full size), so the stage time here is a LOWER bound and the ratio
printed an UPPER bound of what a real model sees.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from common import ROOT  # noqa: F401 - puts examples/ on sys.path

RATE = 16000


def speech_like(seconds: float, seed: int = 7):
    """Noise bursts (syllables) at -20 dBFS with 150 ms pauses at -60 dBFS."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = int(seconds * RATE)
    x = torch.randn(n, generator=g) * 0.001
    step, burst = int(0.45 * RATE), int(0.30 * RATE)
    for start in range(0, n, step):
        end = min(n, start + burst)
        x[start:end] = torch.randn(end - start, generator=g) * 0.1
    return x.clamp(-1, 1).unsqueeze(0)


def main() -> None:
    import make_real_model
    import real_engine

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    model_dir = make_real_model.make(tempfile.mkdtemp(), 2)
    api = real_engine.load(str(model_dir))
    import torch
    import torchaudio

    from cosyvoice_otel.instrumentation import audio_figures

    torch.set_num_threads(1)
    frontend = api.frontend

    def stage_work(prompt) -> None:
        resampled = torchaudio.transforms.Resample(orig_freq=RATE, new_freq=api.sample_rate)(
            prompt)
        frontend._extract_speech_feat(resampled)
        frontend._extract_speech_token(prompt)
        frontend._extract_spk_embedding(prompt)

    print(f"{'prompt':>7s} {'stage ms':>9s} {'figures ms':>11s} {'ratio':>7s}")
    for seconds in (3, 10, 30):
        prompt = speech_like(seconds)
        for _ in range(3):  # warm-up
            stage_work(prompt)
            audio_figures.measure(prompt)
        stage, figures = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            stage_work(prompt)
            stage.append(time.perf_counter() - started)
            started = time.perf_counter()
            audio_figures.measure(prompt)
            figures.append(time.perf_counter() - started)
        a, b = statistics.median(stage) * 1e3, statistics.median(figures) * 1e3
        print(f"{seconds:6d}s {a:9.2f} {b:11.3f} {b / a:7.2%}")
    print(audio_figures.measure(speech_like(10)))


if __name__ == "__main__":
    main()
