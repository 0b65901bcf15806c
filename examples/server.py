"""Demo FastAPI server in the shape of upstream CosyVoice's runtime/python/fastapi/server.py.

    python examples/server.py --port 50000 --model_dir /tmp/tiny-cosyvoice3
    python examples/server.py --engine real --port 50000 --model_dir DIR   (upstream's code)

``--engine demo`` (default) runs our demo engine (this folder's ``cosyvoice``); ``--engine
real`` runs upstream's real engine installed in the environment (``real_engine.py``), on a
model directory ``make_real_model.py`` writes.

``--save-dir DIR`` also keeps each answer as ``DIR/output_YYYYMMDD_HHMMSS_ffffff.wav`` (16-bit PCM,
the standard library's ``wave``), like the seed's app's ``outputs/`` folder.

Routes (GET with query parameters, POST with form fields): /inference_sft, /inference_zero_shot,
/inference_cross_lingual, /inference_instruct, /inference_instruct2, /inference_vc. Each answers
a StreamingResponse of raw int16 PCM produced by a SYNC generator over the model output, so the
model runs while the body streams (as upstream's does). Knows nothing about tracing.
"""

import argparse
import os
import sys

ROOT_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.append(ROOT_DIR)

import datetime  # noqa: E402
import inspect  # noqa: E402
import wave  # noqa: E402

import numpy as np  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, File, Form, HTTPException, UploadFile  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402

app = FastAPI()
cosyvoice = None
EXTRA = {}  # keyword arguments every inference_* call gets (the real engine's text_frontend)
WANTS_TENSOR = False  # an older upstream API takes the prompt as a 16 kHz tensor, not a file


def prompt(upload):
    """What the engine takes as prompt audio: the uploaded file, or (older upstream API,
    ``prompt_speech_16k``) the 16 kHz samples, loaded as upstream's own server does."""
    if not WANTS_TENSOR:
        return upload.file
    from cosyvoice.utils.file_utils import load_wav

    return load_wav(upload.file, 16000)


SAVE_DIR = None  # --save-dir: every answer is also kept as outputs/output_YYYYMMDD_HHMMSS.wav


def generate_data(model_output):
    kept = []
    for output in model_output:
        pcm = (output["tts_speech"].numpy() * (2 ** 15 - 1)).astype(np.int16).tobytes()
        if SAVE_DIR is not None:
            kept.append(pcm)
        yield pcm
    if SAVE_DIR is not None:  # as the seed's app does: a file per answer, named by its time
        name = datetime.datetime.now().strftime("output_%Y%m%d_%H%M%S_%f.wav")
        with wave.open(os.path.join(SAVE_DIR, name), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(cosyvoice.sample_rate)
            out.writeframes(b"".join(kept))


def stream(model_output):
    headers = {"X-Sample-Rate": str(cosyvoice.sample_rate)}
    return StreamingResponse(generate_data(model_output), media_type="audio/L16", headers=headers)


@app.get("/inference_sft")
def inference_sft_get(tts_text: str, spk_id: str, stream_mode: bool = False):
    _check_speaker(spk_id)
    return stream(cosyvoice.inference_sft(tts_text, spk_id, stream=stream_mode, **EXTRA))


@app.post("/inference_sft")
def inference_sft(tts_text: str = Form(), spk_id: str = Form(), stream_mode: bool = Form(False)):
    _check_speaker(spk_id)
    return stream(cosyvoice.inference_sft(tts_text, spk_id, stream=stream_mode, **EXTRA))


@app.post("/inference_zero_shot")
def inference_zero_shot(tts_text: str = Form(), prompt_text: str = Form(),
                        prompt_wav: UploadFile = File(), stream_mode: bool = Form(False)):
    return stream(cosyvoice.inference_zero_shot(tts_text, prompt_text, prompt(prompt_wav),
                                                stream=stream_mode, **EXTRA))


@app.post("/inference_cross_lingual")
def inference_cross_lingual(tts_text: str = Form(), prompt_wav: UploadFile = File(),
                            stream_mode: bool = Form(False)):
    return stream(cosyvoice.inference_cross_lingual(tts_text, prompt(prompt_wav), stream=stream_mode,
                                                    **EXTRA))


@app.get("/inference_instruct")
def inference_instruct_get(tts_text: str, spk_id: str, instruct_text: str,
                           stream_mode: bool = False):
    _check_speaker(spk_id)
    return stream(cosyvoice.inference_instruct(tts_text, spk_id, instruct_text, stream=stream_mode,
                                               **EXTRA))


@app.post("/inference_instruct")
def inference_instruct(tts_text: str = Form(), spk_id: str = Form(), instruct_text: str = Form(),
                       stream_mode: bool = Form(False)):
    _check_speaker(spk_id)
    return stream(cosyvoice.inference_instruct(tts_text, spk_id, instruct_text, stream=stream_mode,
                                               **EXTRA))


@app.post("/inference_instruct2")
def inference_instruct2(tts_text: str = Form(), instruct_text: str = Form(),
                        prompt_wav: UploadFile = File(), stream_mode: bool = Form(False)):
    if not hasattr(cosyvoice, "inference_instruct2"):
        raise HTTPException(400, "this model has no instruct2 mode (CosyVoice 1)")
    return stream(cosyvoice.inference_instruct2(tts_text, instruct_text, prompt(prompt_wav),
                                                stream=stream_mode, **EXTRA))


@app.post("/inference_vc")
def inference_vc(source_wav: UploadFile = File(), prompt_wav: UploadFile = File(),
                 stream_mode: bool = Form(False)):
    return stream(cosyvoice.inference_vc(prompt(source_wav), prompt(prompt_wav), stream=stream_mode))


def _check_speaker(spk_id):
    if spk_id not in cosyvoice.list_available_spks():
        raise HTTPException(400, f"unknown spk_id; available: {cosyvoice.list_available_spks()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=50000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model_dir", type=str, required=True)
    parser.add_argument("--engine", choices=("demo", "real"), default="demo")
    parser.add_argument("--save-dir", default=None,
                        help="also write each answer to DIR/output_YYYYMMDD_HHMMSS_ffffff.wav")
    args = parser.parse_args()
    if args.save_dir:
        os.makedirs(args.save_dir, exist_ok=True)
        SAVE_DIR = args.save_dir
    if args.engine == "real":
        import real_engine

        cosyvoice = real_engine.load(args.model_dir)
        EXTRA["text_frontend"] = real_engine.text_frontend()
    else:
        from cosyvoice.cli.cosyvoice import AutoModel

        cosyvoice = AutoModel(model_dir=args.model_dir)
    WANTS_TENSOR = "prompt_speech_16k" in inspect.signature(
        cosyvoice.inference_zero_shot).parameters
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
