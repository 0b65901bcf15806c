"""An in-process gRPC server answering ``cosyvoice.CosyVoice/Inference`` (bytes in, a stream
of bytes out) with the handler a test gives: what `verify --grpc` talks to in unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any


@contextmanager
def inference_server(handler: Callable[[bytes, Any], Iterator[bytes]],
                     interceptors: tuple[Any, ...] = ()) -> Iterator[str]:
    """Yields the server's ``127.0.0.1:PORT``; stopped at the end. ``interceptors``: the
    gRPC server instrumentation's, for a traced server."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=interceptors)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "cosyvoice.CosyVoice", {"Inference": grpc.unary_stream_rpc_method_handler(handler)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)
