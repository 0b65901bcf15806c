"""A Gradio app with every handler kind the bridge must serve: sync, async, generator, batched.

    python tests/support/apps/gradio_handlers.py --port P --model_dir DIR

Knows nothing about tracing. Each handler runs one sft synthesis on the demo engine.
"""

import argparse
import asyncio
import os
import sys

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                             "examples"))

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from cosyvoice.cli.cosyvoice import AutoModel  # noqa: E402


def synthesise(text: str) -> np.ndarray:
    chunks = [o["tts_speech"].numpy().flatten() for o in model.inference_sft(text, "中文女")]
    return np.concatenate(chunks)


def synth_sync(text):
    return model.sample_rate, synthesise(text)


async def synth_async(text):
    await asyncio.sleep(0)
    return model.sample_rate, synthesise(text)


def synth_stream(text):
    for output in model.inference_sft(text, "中文女", stream=True):
        yield model.sample_rate, output["tts_speech"].numpy().flatten()


def synth_batch(texts):
    return [[(model.sample_rate, synthesise(t)) for t in texts]]


def main(port: int) -> None:
    with gr.Blocks() as demo:
        text = gr.Textbox(value="Hello there.")
        audio = gr.Audio()
        for fn, name in ((synth_sync, "sync"), (synth_async, "async"),
                         (synth_stream, "stream")):
            gr.Button(name).click(fn, inputs=[text], outputs=[audio], api_name=name)
        gr.Button("batch").click(synth_batch, inputs=[text], outputs=[audio], api_name="batch",
                                 batch=True, max_batch_size=4)
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name="127.0.0.1", server_port=port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model_dir", required=True)
    args = parser.parse_args()
    model = AutoModel(model_dir=args.model_dir)
    main(args.port)
