"""Write a tiny random-weights model directory that upstream CosyVoice's OWN loader accepts.

    python examples/make_real_model.py DIR --version 1|2   (in the real engine's venv)
    COSYVOICE_UPSTREAM=/path/to/CosyVoice python examples/make_real_model.py DIR --version 3

Run with the real ``cosyvoice`` package importable (``.venv-cosyvoice``: PyPI's
``cosyvoice-minicpmo``, upstream's CosyVoice/CosyVoice2 code). No weight is downloaded: every
module is built from a config of ours with small sizes and saved with random weights; the two
ONNX frontends are exported from tiny torch modules with the real models' inputs and outputs.
The directory holds what ``CosyVoice(model_dir)`` / ``CosyVoice2(model_dir)`` open:

* ``cosyvoice.yaml`` (v1) / ``cosyvoice2.yaml`` (v2): HyperPyYAML naming upstream's classes
  (``cosyvoice.llm.llm.TransformerLM`` / ``Qwen2LM``, ``cosyvoice.flow.flow.MaskedDiffWithXvec``
  / ``CausalMaskedDiffWithXvec``, ``cosyvoice.hifigan.generator.HiFTGenerator``), sizes ours;
* ``llm.pt``, ``flow.pt``, ``hift.pt``: their state dicts;
* ``campplus.onnx`` (``input`` [1, T, 80] -> [1, 192]) and ``speech_tokenizer_v1.onnx`` /
  ``_v2.onnx`` (``feats`` [1, 128, T], ``feats_length`` [1] -> [1, T/2] at 50 Hz, or [1, T/4]
  at 25 Hz);
* ``spk2info.pt``: two preset speakers (``中文女``, ``英文男``) for sft and instruct;
* v2: ``CosyVoice-BlankEN/``, a tiny ``Qwen2ForCausalLM`` and a byte-level BPE tokenizer that
  ``AutoTokenizer`` loads (upstream's QwenTokenizer adds its special tokens on top).

v3 (``cosyvoice3.yaml``: ``CosyVoice3LM``, ``CausalMaskedDiffWithDiT`` with a ``DiT``
estimator, ``CausalHiFTGenerator``; ``speech_tokenizer_v3.onnx``; no preset speakers) needs an
upstream checkout named by ``COSYVOICE_UPSTREAM``: PyPI's package has no CosyVoice3.

The v1 directory's name ends in ``-Instruct`` when ``--instruct`` is given (upstream enables
``inference_instruct`` by the directory's name).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# this folder holds OUR demo engine under the same package name: the real one must win (and
# an upstream checkout named by COSYVOICE_UPSTREAM comes first)
import real_engine  # noqa: E402 - this folder, before it leaves sys.path

real_engine.use_real_package()

SPEECH_TOKENS = 64  # speech token vocabulary (the LLM's output, flow's input)
WIDTH = 32  # every hidden size
UPSAMPLE_WIDTH = 512  # v2's upsampling encoder hard-codes 512 channels in two of its layers
SPEAKERS = ("中文女", "英文男")
V3_LOGIT_SCALE = 20.0  # v3: see make()
CFM = """        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
"""
SAMPLING = """    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1
"""


def encoder(cls: str, indent: int, width: int = WIDTH, **extra: object) -> str:
    rows = {"input_size": width, "output_size": width, "attention_heads": 2,
            "linear_units": 2 * WIDTH, "num_blocks": 1, "dropout_rate": 0.0,
            "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0,
            "normalize_before": True, "input_layer": "'linear'",
            "pos_enc_layer_type": "'rel_pos_espnet'", "selfattention_layer_type": "'rel_selfattn'",
            **extra}
    pad = " " * indent
    return f"!new:{cls}\n" + "".join(f"{pad}{k}: {v}\n" for k, v in rows.items())


def hift(sample_rate: int, rates: list[int], kernels: list[int], causal: bool = False) -> str:
    n = len(rates)
    source_kernels = [7, 7, 11][-n:] if n == 3 else [7, 11]
    # v3's vocoder is the causal subclass, with a right look-ahead and a causal f0 predictor
    cls, f0 = (("CausalHiFTGenerator", "CausalConvRNNF0Predictor") if causal
               else ("HiFTGenerator", "ConvRNNF0Predictor"))
    look = "    conv_pre_look_right: 4\n" if causal else ""
    return f"""hift: !new:cosyvoice.hifigan.generator.{cls}
    in_channels: 80
    base_channels: {WIDTH}
    nb_harmonics: 8
    sampling_rate: {sample_rate}
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: {rates}
    upsample_kernel_sizes: {kernels}
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3]
    resblock_dilation_sizes: [[1, 3, 5]]
    source_resblock_kernel_sizes: {source_kernels}
    source_resblock_dilation_sizes: {[[1, 3, 5]] * n}
    lrelu_slope: 0.1
    audio_limit: 0.99
{look}    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.{f0}
        num_class: 1
        in_channels: 80
        cond_channels: {WIDTH}
"""


def mel(sample_rate: int, n_fft: int, hop: int) -> str:
    return f"""feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: {n_fft}
    num_mels: 80
    sampling_rate: {sample_rate}
    hop_size: {hop}
    win_size: {n_fft}
    fmin: 0
    fmax: 8000
    center: False
"""


def v1_yaml() -> str:
    return f"""sample_rate: 22050
llm: !new:cosyvoice.llm.llm.TransformerLM
    text_encoder_input_size: {WIDTH}
    llm_input_size: {WIDTH}
    llm_output_size: {WIDTH}
    text_token_size: 51866
    speech_token_size: {SPEECH_TOKENS}
    length_normalized_loss: True
    lsm_weight: 0
    spk_embed_dim: 192
    text_encoder: {encoder("cosyvoice.transformer.encoder.ConformerEncoder", 8,
                           use_cnn_module=False, macaron_style=False, use_dynamic_chunk=False,
                           use_dynamic_left_chunk=False, static_chunk_size=1)}\
    llm: {encoder("cosyvoice.transformer.encoder.TransformerEncoder", 8,
                  input_layer="'linear_legacy'", static_chunk_size=1)}\
{SAMPLING}
flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: {WIDTH}
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: {SPEECH_TOKENS}
    input_frame_rate: 50
    only_mask_loss: True
    encoder: {encoder("cosyvoice.transformer.encoder.ConformerEncoder", 8,
                      use_cnn_module=False, macaron_style=False)}\
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1, 1, 1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
{CFM}        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [{WIDTH}, {WIDTH}]
            dropout: 0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 1
            num_heads: 2
            act_fn: 'gelu'

{hift(22050, [8, 8], [16, 16])}
get_tokenizer: !name:whisper.tokenizer.get_tokenizer
    multilingual: True
    num_languages: 100
    language: 'en'
    task: 'transcribe'
allowed_special: 'all'
{mel(22050, 1024, 256)}"""


def qwen_llm(cls: str) -> str:
    """v2's and v3's LLM block: a Qwen2 encoder under upstream's ``cls``, sizes ours."""
    return f"""llm: !new:cosyvoice.llm.llm.{cls}
    llm_input_size: {2 * WIDTH}
    llm_output_size: {2 * WIDTH}
    speech_token_size: {SPEECH_TOKENS}
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
{SAMPLING}"""


def qwen_tokenizer(version: str = "") -> str:
    """v2's and v3's text tokenizer (v3 names its version; v2's is the default)."""
    extra = f"    version: {version}\n" if version else ""
    return f"""get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
{extra}allowed_special: 'all'
"""


def v2_yaml() -> str:
    return f"""sample_rate: 24000
qwen_pretrain_path: ''
{qwen_llm("Qwen2LM")}
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: {UPSAMPLE_WIDTH}
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: {SPEECH_TOKENS}
    input_frame_rate: 25
    only_mask_loss: True
    token_mel_ratio: 2
    pre_lookahead_len: 3
    encoder: {encoder("cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder", 8,
                      UPSAMPLE_WIDTH, use_cnn_module=False, macaron_style=False,
                      use_dynamic_chunk=True)}\
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
{CFM}        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [{WIDTH}]
            dropout: 0.0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 1
            num_heads: 2
            act_fn: 'gelu'
            static_chunk_size: 50
            num_decoding_left_chunks: 2

{hift(24000, [8, 5, 3], [16, 11, 7])}
{qwen_tokenizer()}{mel(24000, 1920, 480)}"""


def v3_yaml() -> str:
    """CosyVoice3 (from an upstream checkout): upstream's v3 classes, sizes ours (the LLM 64
    wide, a 2-block DiT 64 wide, the causal vocoder 32 channels)."""
    return f"""sample_rate: 24000
qwen_pretrain_path: ''
{qwen_llm("CosyVoice3LM")}
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithDiT
    input_size: 80
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: {SPEECH_TOKENS}
    input_frame_rate: 25
    only_mask_loss: True
    token_mel_ratio: 2
    pre_lookahead_len: 3
    pre_lookahead_layer: !new:cosyvoice.transformer.upsample_encoder.PreLookaheadLayer
        in_channels: 80
        channels: {2 * WIDTH}
        pre_lookahead_len: 3
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
{CFM}        estimator: !new:cosyvoice.flow.DiT.dit.DiT
            dim: {2 * WIDTH}
            depth: 2
            heads: 2
            dim_head: {WIDTH}
            ff_mult: 2
            mel_dim: 80
            mu_dim: 80
            spk_dim: 80
            out_channels: 80
            static_chunk_size: 50
            num_decoding_left_chunks: -1

{hift(24000, [8, 5, 3], [16, 11, 7], causal=True)}
{qwen_tokenizer("cosyvoice3")}{mel(24000, 1920, 480)}"""


def export_onnx(out: Path, version: int) -> None:
    """The two ONNX frontends, tiny torch modules with the real ones' I/O names and shapes."""
    import torch

    class Campplus(torch.nn.Module):  # fbank [1, T, 80] -> speaker embedding [1, 192]
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(80, 192)

        def forward(self, feats: torch.Tensor) -> torch.Tensor:
            return self.proj(feats.mean(dim=1))

    stride = 2 if version == 1 else 4  # 50 Hz (v1) or 25 Hz (v2, v3) tokens from 100 Hz frames

    class SpeechTokenizer(torch.nn.Module):  # log-mel [1, 128, T] -> tokens [1, T / stride]
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(128, SPEECH_TOKENS, stride, stride=stride)

        def forward(self, feats: torch.Tensor, feats_length: torch.Tensor) -> torch.Tensor:
            # feats_length takes part (times 0), or the export drops an unused input
            return self.conv(feats).argmax(dim=1) + feats_length.to(torch.int64)[:, None] * 0

    torch.onnx.export(Campplus(), (torch.randn(1, 50, 80),), str(out / "campplus.onnx"),
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {1: "T"}}, opset_version=14)
    torch.onnx.export(SpeechTokenizer(), (torch.randn(1, 128, 100),
                                          torch.tensor([100], dtype=torch.int32)),
                      str(out / f"speech_tokenizer_v{version}.onnx"),
                      input_names=["feats", "feats_length"], output_names=["indices"],
                      dynamic_axes={"feats": {2: "T"}, "indices": {1: "T4"}}, opset_version=14)


# Qwen's regular vocabulary: its first special token, <|endoftext|>, comes right after it;
# upstream's v3 LLM looks for <|endofprompt|> by the id it has in Qwen's vocabulary (151646)
QWEN_REGULAR = 151643


def tiny_qwen(out: Path, version: int = 2) -> None:
    """A byte-level BPE tokenizer AutoTokenizer loads, and a one-layer Qwen2 sized to it
    (with upstream's QwenTokenizer special tokens added on top). For v3 the vocabulary is
    padded with unreachable entries to Qwen's size, so the special tokens get Qwen's ids."""
    import json

    from tokenizers import ByteLevelBPETokenizer, Tokenizer
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    corpus = ["Hello there, this is the real engine.", "你好，世界！这是一个测试。",
              "Speak slowly and clearly please.", "The quick brown fox jumps over the lazy dog."]
    bpe = ByteLevelBPETokenizer()
    specials = ["<|endoftext|>"] if version == 2 else []
    bpe.train_from_iterator(corpus * 10, vocab_size=400, min_frequency=1,
                            special_tokens=specials)
    tokenizer = bpe
    if version == 3:
        data = json.loads(bpe._tokenizer.to_str())
        vocab = data["model"]["vocab"]
        # no merge leads to these: they pad the id space and never come out of the text
        vocab.update({f"unused{i}": i for i in range(len(vocab), QWEN_REGULAR)})
        tokenizer = Tokenizer.from_str(json.dumps(data))
        tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.save_pretrained(out)
    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer

    # (PyPI's build has no version argument: it knows v2 only)
    qwen = (get_qwen_tokenizer(str(out), True, "cosyvoice3") if version == 3
            else get_qwen_tokenizer(str(out), True))
    if version == 3:
        eop = qwen.tokenizer.convert_tokens_to_ids("<|endofprompt|>")
        assert eop == QWEN_REGULAR + 3, f"<|endofprompt|> is {eop}, upstream expects 151646"
    vocab = len(qwen.tokenizer)  # with upstream's special tokens
    # v3's embedding is Qwen-sized: tied, so its weights are stored once
    config = Qwen2Config(vocab_size=vocab + 8, hidden_size=2 * WIDTH,
                         intermediate_size=4 * WIDTH, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=4096, tie_word_embeddings=version == 3)
    Qwen2ForCausalLM(config).save_pretrained(out, safe_serialization=True)


def make(directory: str, version: int, fill_tokens: bool = False) -> Path:
    import torch
    from hyperpyyaml import load_hyperpyyaml

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1986)
    if version == 3:
        try:
            from cosyvoice.llm.llm import CosyVoice3LM  # noqa: F401 - only a checkout has it
        except ImportError:
            raise SystemExit("make_real_model.py: error: v3 needs an upstream checkout: "
                             "set COSYVOICE_UPSTREAM=/path/to/CosyVoice") from None
    name = {1: "cosyvoice.yaml", 2: "cosyvoice2.yaml", 3: "cosyvoice3.yaml"}[version]
    (out / name).write_text({1: v1_yaml, 2: v2_yaml, 3: v3_yaml}[version](), encoding="utf-8")
    overrides = {}
    if version >= 2:
        tiny_qwen(out / "CosyVoice-BlankEN", version)
        overrides = {"qwen_pretrain_path": str(out / "CosyVoice-BlankEN")}
    with open(out / name, encoding="utf-8") as f:
        configs = load_hyperpyyaml(f, overrides=overrides)
    if version == 2:
        # A random LLM picks any of its speech_token_size + 3 outputs; a trained one emits the
        # two above eos only where they belong. Upstream's streamed-text loop
        # (inference_bistream) raises on + 1, and its plain loop (inference_wrapper) mishandles
        # + 2 (the "fill" token of streamed text) as the FIRST token: it re-feeds the whole
        # prompt into the KV cache and fails. So + 1 never, and + 2 only in a model made for
        # streamed text input (``fill_tokens``), whose other requests may then fail that way.
        with torch.no_grad():
            decoder = configs["llm"].llm_decoder
            for extra in ((1,) if fill_tokens else (1, 2)):
                decoder.weight[SPEECH_TOKENS + extra].zero_()
                decoder.bias[SPEECH_TOKENS + extra] = -1e4
    if version == 3:
        # v3's LLM stops on any of 200 ids above the speech tokens, and its early-stop mask
        # covers only the first of them (sos, not eos): a random LLM stops within a few
        # tokens (its repetition fallback samples from all 264 ids). Zeroed rows give the 199
        # other stop ids a logit of 0, and speech rows scaled up put every speech token's
        # logit far from 0, so the mass left on them vanishes; eos keeps a scaled row, one
        # candidate among the speech tokens, so a request still ends before its length limit.
        with torch.no_grad():
            decoder = configs["llm"].llm_decoder
            eos = configs["llm"].eos_token
            decoder.weight[:SPEECH_TOKENS] *= V3_LOGIT_SCALE
            decoder.weight[eos] *= V3_LOGIT_SCALE
            for extra in range(200):
                if SPEECH_TOKENS + extra != eos:
                    decoder.weight[SPEECH_TOKENS + extra].zero_()
    for part in ("llm", "flow", "hift"):
        torch.save(configs[part].state_dict(), out / f"{part}.pt")
    export_onnx(out, version)
    # v3 ships no preset speakers (its texts need an instruction prefix sft cannot carry)
    torch.save({spk: {"embedding": torch.randn(1, 192)} for spk in SPEAKERS}
               if version < 3 else {}, out / "spk2info.pt")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--version", type=int, choices=(1, 2, 3), default=2,
                        help="3 needs COSYVOICE_UPSTREAM (an upstream checkout)")
    parser.add_argument("--fill-tokens", action="store_true",
                        help="v2: let the LLM emit the fill token streamed text input needs")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(make(args.directory, args.version, args.fill_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
