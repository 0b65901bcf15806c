"""A tiny transcriber with FunASR's ``AutoModel.generate`` shape (the demo's own ASR step).

Used by the demo apps when zero-shot prompt text is empty. It finds voiced segments by energy
and spells one pseudo-syllable per segment; silence gives an empty transcript.
"""

from __future__ import annotations

from typing import Any

from cosyvoice.utils.file_utils import load_wav

_SYLLABLES = ("ba", "da", "ka", "la", "ma", "na", "pa", "sa", "ta", "wa")


class TinyTranscriber:
    def __init__(self, threshold: float = 0.01) -> None:
        self.threshold = threshold

    def generate(self, input: Any, **kwargs: Any) -> list[dict[str, str]]:  # noqa: A002
        speech = load_wav(input, 16000)
        frames = speech[0, : speech.shape[1] // 320 * 320].reshape(-1, 320)
        voiced = (frames.pow(2).mean(dim=1).sqrt() > self.threshold).tolist()
        words, previous = [], False
        for i, now in enumerate(voiced):
            if now and not previous:
                words.append(_SYLLABLES[i % len(_SYLLABLES)])
            previous = now
        return [{"key": "prompt", "text": " ".join(words)}]

