"""Compile cosyvoice.proto into cosyvoice_pb2.py and cosyvoice_pb2_grpc.py (grpcio-tools).

    python examples/grpc_proto/build_proto.py
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def build() -> None:
    from grpc_tools import protoc

    code = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"--python_out={HERE}",
                        f"--grpc_python_out={HERE}", os.path.join(HERE, "cosyvoice.proto")])
    if code != 0:
        raise SystemExit(f"protoc failed ({code}) on {HERE}/cosyvoice.proto")


def ensure() -> None:
    """Compile unless the generated modules are there and newer than the proto."""
    proto = os.path.join(HERE, "cosyvoice.proto")
    out = os.path.join(HERE, "cosyvoice_pb2_grpc.py")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(proto):
        build()
    if HERE not in sys.path:
        sys.path.insert(0, HERE)


if __name__ == "__main__":
    build()
    print(f"compiled {HERE}/cosyvoice.proto")
