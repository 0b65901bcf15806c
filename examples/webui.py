"""Demo Gradio UI in the shape of upstream CosyVoice's webui.py, on the demo engine.

    python examples/webui.py --port 8000 --model_dir /tmp/tiny-cosyvoice3
    python examples/webui.py --engine real --port 8000 --model_dir DIR   (upstream's code)

``--engine real`` runs upstream's real engine installed in the environment (``real_engine.py``)
on a model directory ``make_real_model.py`` writes; it has no transcriber, so zero-shot needs a
prompt text there.

Knows nothing about tracing: run it under ``cosyvoice-traced run -- python examples/webui.py ...``.
Same controls as upstream (text, mode, speaker, prompt text/audio, instruct text, seed, stream,
speed); the handler is a generator yielding ``(sample_rate, numpy_array)``, and the queue is
``max_size=4, default_concurrency_limit=2`` like upstream's. Zero-shot with an empty prompt text
transcribes the prompt audio first (the ASR step).
"""

import argparse
import os
import random
import shutil
import sys

ROOT_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.append(ROOT_DIR)  # upstream appends its folder too, just before importing cosyvoice

import inspect  # noqa: E402
import logging  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

EXTRA = {}  # keyword arguments every inference_* call gets (the real engine's text_frontend)
WANTS_TENSOR = False  # an older upstream API takes the prompt as a 16 kHz tensor, not a file
asr = None  # the demo engine's transcriber (the real engine has none here)

MODES = ["pretrained voice", "3s fast clone", "cross-lingual clone", "instruct",
         "voice conversion"]
HELP = {
    "pretrained voice": "1. pick a pretrained voice  2. generate",
    "3s fast clone": "1. give prompt audio (at most 30 s)  2. give its text (empty: transcribed)"
                     "  3. generate",
    "cross-lingual clone": "1. give prompt audio  2. generate",
    "instruct": "1. pick a voice (v1) or give prompt audio (v2/v3)  2. give instruct text"
                "  3. generate",
    "voice conversion": "1. upload the source audio as prompt audio  2. generate",
}
STREAM_CHOICES = [("no", False), ("yes", True)]
PROMPT_SR = 16000


def generate_seed():
    return {"__type__": "update", "value": random.randint(1, 100000000)}


def change_instruction(mode):
    return HELP[mode]


def generate_audio(tts_text, mode, sft_speaker, prompt_text, prompt_wav_upload, prompt_wav_record,
                   instruct_text, seed, stream, speed):
    prompt_wav = prompt_wav_upload if prompt_wav_upload is not None else prompt_wav_record
    silence = (cosyvoice.sample_rate, np.zeros(cosyvoice.sample_rate, dtype=np.float32))
    if mode in ("3s fast clone", "cross-lingual clone", "voice conversion") and prompt_wav is None:
        gr.Warning("prompt audio is empty: did you forget to give it?")
        yield silence
        return
    if mode == "instruct" and not instruct_text:
        gr.Warning("instruct mode needs an instruct text")
        yield silence
        return
    if mode == "3s fast clone" and not prompt_text and asr is None:
        gr.Warning("prompt text is empty: please type the prompt audio's text")
        yield silence
        return
    if mode == "3s fast clone" and not prompt_text:
        result = asr.generate(input=prompt_wav)
        prompt_text = result[0]["text"] if result else ""
        if not prompt_text:
            gr.Warning("could not transcribe the prompt audio; please type its text")
            yield silence
            return
    set_all_random_seed(int(seed))
    stream, speed = bool(stream), float(speed)
    if prompt_wav is not None and WANTS_TENSOR:  # as upstream's own webui did then
        from cosyvoice.utils.file_utils import load_wav

        prompt_wav = load_wav(prompt_wav, PROMPT_SR)
    if mode == "pretrained voice":
        logging.info("get sft inference request")
        outputs = cosyvoice.inference_sft(tts_text, sft_speaker, stream=stream, speed=speed,
                                          **EXTRA)
    elif mode == "3s fast clone":
        outputs = cosyvoice.inference_zero_shot(tts_text, prompt_text, prompt_wav, stream=stream,
                                                speed=speed, **EXTRA)
    elif mode == "cross-lingual clone":
        outputs = cosyvoice.inference_cross_lingual(tts_text, prompt_wav, stream=stream,
                                                    speed=speed, **EXTRA)
    elif mode == "voice conversion":
        outputs = cosyvoice.inference_vc(prompt_wav, prompt_wav, stream=stream, speed=speed)
    elif hasattr(cosyvoice, "inference_instruct2"):
        if prompt_wav is None:
            gr.Warning("instruct mode on CosyVoice2/3 needs prompt audio")
            yield silence
            return
        outputs = cosyvoice.inference_instruct2(tts_text, instruct_text, prompt_wav,
                                                stream=stream, speed=speed, **EXTRA)
    else:
        outputs = cosyvoice.inference_instruct(tts_text, sft_speaker, instruct_text,
                                               stream=stream, speed=speed, **EXTRA)
    for output in outputs:
        yield cosyvoice.sample_rate, output["tts_speech"].numpy().flatten()


def main():
    with gr.Blocks() as demo:
        gr.Markdown("### CosyVoice demo engine (tiny random weights: the audio is noise-like)")
        tts_text = gr.Textbox(label="text to synthesise", lines=1,
                              value="Hello from the CosyVoice demo engine. 你好，世界。")
        speed = gr.Slider(minimum=0.5, maximum=2.0, step=0.05, label="speed", value=1.0)
        with gr.Row():
            mode = gr.Radio(choices=MODES, label="mode", value=MODES[0])
            instruction = gr.Text(label="steps", value=HELP[MODES[0]])
            sft_speaker = gr.Dropdown(choices=speakers, label="pretrained voice",
                                      value=speakers[0])
            stream = gr.Radio(choices=STREAM_CHOICES, label="streaming", value=False)
            with gr.Column():
                seed_button = gr.Button(value="\U0001F3B2")
                seed = gr.Number(value=0, label="seed")
        with gr.Row():
            prompt_wav_upload = gr.Audio(sources=["upload"], type="filepath",
                                         label="prompt audio file (at least 16 kHz)")
            prompt_wav_record = gr.Audio(sources=["microphone"], type="filepath",
                                         label="record prompt audio")
        prompt_text = gr.Textbox(label="prompt text", lines=1, value="")
        instruct_text = gr.Textbox(label="instruct text", lines=1, value="")
        generate = gr.Button("generate audio")
        # Gradio encodes streamed audio with ffmpeg; without it, fall back to whole-clip output
        audio_output = gr.Audio(label="synthesised audio", autoplay=True,
                                streaming=shutil.which("ffmpeg") is not None)
        seed_button.click(generate_seed, inputs=[], outputs=seed)
        generate.click(generate_audio,
                       inputs=[tts_text, mode, sft_speaker, prompt_text, prompt_wav_upload,
                               prompt_wav_record, instruct_text, seed, stream, speed],
                       outputs=[audio_output], api_name="generate_audio")
        mode.change(fn=change_instruction, inputs=[mode], outputs=[instruction])
    demo.queue(max_size=4, default_concurrency_limit=2)
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model_dir", type=str, required=True,
                        help="a local model directory (examples/make_tiny_model.py makes one)")
    parser.add_argument("--engine", choices=("demo", "real"), default="demo")
    args = parser.parse_args()
    if args.engine == "real":
        import real_engine

        cosyvoice = real_engine.load(args.model_dir)
        EXTRA["text_frontend"] = real_engine.text_frontend()
    else:
        from cosyvoice.cli.cosyvoice import AutoModel
        from cosyvoice.utils.asr import TinyTranscriber

        cosyvoice = AutoModel(model_dir=args.model_dir)
        asr = TinyTranscriber()
    from cosyvoice.utils.common import set_all_random_seed
    from cosyvoice.utils.file_utils import logging  # noqa: F811 - upstream's, as its webui

    WANTS_TENSOR = "prompt_speech_16k" in inspect.signature(
        cosyvoice.inference_zero_shot).parameters
    speakers = cosyvoice.list_available_spks() or [""]
    main()
