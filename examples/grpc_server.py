"""Demo gRPC server in the shape of upstream CosyVoice's runtime/python/grpc/server.py.

    python examples/grpc_server.py --port 50000 --model_dir /tmp/tiny-cosyvoice3 [--max_conc 4]

Service ``cosyvoice.CosyVoice``, server-streaming ``Inference(Request) returns (stream Response)``:
the request is one of sft / zero-shot / cross-lingual / instruct (prompt audio as 16 kHz int16
PCM bytes); each response carries a chunk of int16 PCM audio as the model yields it. Knows
nothing about tracing.
"""

import argparse
import logging
import os
import sys
from concurrent import futures

ROOT_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.append(ROOT_DIR)
sys.path.append(os.path.join(ROOT_DIR, "grpc_proto"))

import build_proto  # noqa: E402

build_proto.ensure()

import cosyvoice_pb2  # noqa: E402
import cosyvoice_pb2_grpc  # noqa: E402
import grpc  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from cosyvoice.cli.cosyvoice import AutoModel  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def pcm_to_tensor(data: bytes) -> torch.Tensor:
    """16 kHz int16 PCM -> a float tensor [1, T], as upstream's server does."""
    samples = np.frombuffer(data, dtype=np.int16).astype(np.float32) / (2 ** 15)
    return torch.from_numpy(samples.copy()).unsqueeze(0)


class CosyVoiceServiceImpl(cosyvoice_pb2_grpc.CosyVoiceServicer):
    def __init__(self, args):
        self.cosyvoice = AutoModel(model_dir=args.model_dir)
        logging.info("grpc service initialized")

    def Inference(self, request, context):  # noqa: N802 - the proto's name
        if request.HasField("sft_request"):
            r = request.sft_request
            if r.spk_id not in self.cosyvoice.list_available_spks():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown speaker")
            model_output = self.cosyvoice.inference_sft(r.tts_text, r.spk_id)
        elif request.HasField("zero_shot_request"):
            r = request.zero_shot_request
            model_output = self.cosyvoice.inference_zero_shot(r.tts_text, r.prompt_text,
                                                              pcm_to_tensor(r.prompt_audio))
        elif request.HasField("cross_lingual_request"):
            r = request.cross_lingual_request
            model_output = self.cosyvoice.inference_cross_lingual(r.tts_text,
                                                                  pcm_to_tensor(r.prompt_audio))
        elif request.HasField("instruct_request"):
            r = request.instruct_request
            if type(self.cosyvoice).__name__ != "CosyVoice":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "instruct needs a CosyVoice 1 model")
            model_output = self.cosyvoice.inference_instruct(r.tts_text, r.spk_id,
                                                             r.instruct_text)
        else:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty request")
        for output in model_output:
            audio = (output["tts_speech"].numpy() * (2 ** 15 - 1)).astype(np.int16)
            yield cosyvoice_pb2.Response(tts_audio=audio.tobytes())


def main(args):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.max_conc),
                         maximum_concurrent_rpcs=args.max_conc)
    cosyvoice_pb2_grpc.add_CosyVoiceServicer_to_server(CosyVoiceServiceImpl(args), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}" if args.host is None
                             else f"{args.host}:{args.port}")
    server.start()
    logging.info("server listening on port %s", args.port)
    server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=50000)
    parser.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    parser.add_argument("--max_conc", type=int, default=4)
    parser.add_argument("--model_dir", type=str, required=True)
    main(parser.parse_args())
