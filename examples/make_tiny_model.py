"""Write a tiny, randomly initialised demo model directory for the demo engine.

    python examples/make_tiny_model.py DIR [--version 1|2|3] [--seed 0]

The directory has upstream's config file (``cosyvoice.yaml`` / ``cosyvoice2.yaml`` /
``cosyvoice3.yaml``) naming the llm, flow and hift classes of that version, the weights of
each network and ``spk2info.pt`` with pretrained speakers, so ``list_available_spks()`` and sft
mode work.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

SPEAKERS = ("中文女", "中文男", "英文女", "英文男")
TEXT_VOCAB, SPEECH_VOCAB = 512, 64
# The classes each version's config instantiates: upstream's, per examples/libritts/*/conf
CLASSES = {
    1: ("cosyvoice.yaml", 22050, "cosyvoice.llm.llm.TransformerLM",
        "cosyvoice.flow.flow.MaskedDiffWithXvec", "cosyvoice.hifigan.generator.HiFTGenerator"),
    2: ("cosyvoice2.yaml", 24000, "cosyvoice.llm.llm.Qwen2LM",
        "cosyvoice.flow.flow.CausalMaskedDiffWithXvec",
        "cosyvoice.hifigan.generator.HiFTGenerator"),
    3: ("cosyvoice3.yaml", 24000, "cosyvoice.llm.llm.CosyVoice3LM",
        "cosyvoice.flow.flow.CausalMaskedDiffWithDiT",
        "cosyvoice.hifigan.generator.CausalHiFTGenerator"),
}
CONFIG = """\
# Tiny demo model for cosyvoice-otel (random weights), laid out like upstream's {name}:
# the llm, flow and hift entries name the classes the model is built from.
sample_rate: {rate}
text_vocab: {text_vocab}
speech_vocab: {speech_vocab}
instruct: {instruct}

llm: !new:{llm}
    text_vocab: {text_vocab}
    speech_vocab: {speech_vocab}
    dim: 128
    tokens_per_char: 2.0

flow: !new:{flow}
    speech_vocab: {speech_vocab}
    channels: 96
    n_steps: 8

hift: !new:{hift}
    channels: 64
    sampling_rate: {rate}
"""


def config_text(version: int, **overrides: str) -> str:
    """The config file of a tiny model of ``version``; ``overrides`` replace class paths
    (``llm=``, ``flow=``, ``hift=``), e.g. to name a fork's class."""
    name, rate, llm, flow, hift = CLASSES[version]
    fields = {"llm": llm, "flow": flow, "hift": hift, **overrides}
    return CONFIG.format(name=name, rate=rate, text_vocab=TEXT_VOCAB, speech_vocab=SPEECH_VOCAB,
                         instruct=str(version == 1).lower(), **fields)


def make(model_dir: str, version: int = 3, seed: int = 0) -> str:
    from cosyvoice.cli.frontend import CampPlus, SpeechTokenizer
    from cosyvoice.utils.config import load_model_config

    name = CLASSES[version][0]
    torch.manual_seed(seed)
    os.makedirs(model_dir, exist_ok=True)
    for version_name, *_ in CLASSES.values():
        if os.path.exists(os.path.join(model_dir, version_name)):
            os.remove(os.path.join(model_dir, version_name))
    config_path = os.path.join(model_dir, name)
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(config_text(version))
    configs = load_model_config(config_path)  # builds the networks the config names
    for part, module in (("llm", configs["llm"]), ("flow", configs["flow"]),
                         ("hift", configs["hift"]),
                         ("speech_tokenizer", SpeechTokenizer(SPEECH_VOCAB)),
                         ("campplus", CampPlus())):
        torch.save(module.state_dict(), os.path.join(model_dir, f"{part}.pt"))
    spk2info = {name: {"embedding": torch.nn.functional.normalize(torch.randn(1, 192), dim=-1)}
                for name in SPEAKERS}
    torch.save(spk2info, os.path.join(model_dir, "spk2info.pt"))
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
