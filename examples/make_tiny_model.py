"""Write a tiny, randomly initialised demo model directory for the demo engine.

    python examples/make_tiny_model.py DIR [--version 1|2|3] [--seed 0]

The directory has upstream's marker file (``cosyvoice.yaml`` / ``cosyvoice2.yaml`` /
``cosyvoice3.yaml``, YAML written as JSON), the weights of each network and ``spk2info.pt``
with pretrained speakers, so ``list_available_spks()`` and sft mode work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from cosyvoice.cli.cosyvoice import CosyVoice, CosyVoice2, CosyVoice3  # noqa: E402
from cosyvoice.cli.frontend import CampPlus, SpeechTokenizer  # noqa: E402
from cosyvoice.hifigan.generator import HiFTGenerator  # noqa: E402

DIMS = {"text_vocab": 512, "speech_vocab": 64, "llm_dim": 128, "tokens_per_char": 2.0,
        "flow_channels": 96, "flow_steps": 8, "hift_channels": 64}
SPEAKERS = ("中文女", "中文男", "英文女", "英文男")


def make(model_dir: str, version: int = 3, seed: int = 0) -> str:
    cls = {1: CosyVoice, 2: CosyVoice2, 3: CosyVoice3}[version]
    torch.manual_seed(seed)
    os.makedirs(model_dir, exist_ok=True)
    for name in ("cosyvoice.yaml", "cosyvoice2.yaml", "cosyvoice3.yaml"):
        if os.path.exists(os.path.join(model_dir, name)):
            os.remove(os.path.join(model_dir, name))
    config = {"version": version, "sample_rate": cls.sample_rate, "instruct": version == 1,
              "dims": DIMS}
    llm = cls.llm_cls(DIMS["text_vocab"], DIMS["speech_vocab"], DIMS["llm_dim"],
                      tokens_per_char=DIMS["tokens_per_char"])
    flow = cls.flow_cls(DIMS["speech_vocab"], channels=DIMS["flow_channels"],
                        n_steps=DIMS["flow_steps"])
    hift = HiFTGenerator(channels=DIMS["hift_channels"], sampling_rate=cls.sample_rate)
    for name, module in (("llm", llm), ("flow", flow), ("hift", hift),
                         ("speech_tokenizer", SpeechTokenizer(DIMS["speech_vocab"])),
                         ("campplus", CampPlus())):
        torch.save(module.state_dict(), os.path.join(model_dir, f"{name}.pt"))
    spk2info = {name: {"embedding": torch.nn.functional.normalize(torch.randn(1, 192), dim=-1)}
                for name in SPEAKERS}
    torch.save(spk2info, os.path.join(model_dir, "spk2info.pt"))
    with open(os.path.join(model_dir, cls.config_name), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--version", type=int, choices=(1, 2, 3), default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make(args.model_dir, args.version, args.seed))


if __name__ == "__main__":
    main()
