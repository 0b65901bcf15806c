"""Cost of one stage span vs a bare SDK span, in one process, same provider.

    .venv/bin/python benchmarks/span_cost.py [--calls 20000]

Three ways to call the same tiny function: plain; inside `tracer.start_as_current_span`
(the bare SDK span); through the instrumentor's stage wrapper (a stage row, extractor none).
A fourth: a stage row that carries the four part roles of ``model.tts`` (llm x2, flow, hift),
resolved from the instance at every call (the role lookups, cached per class). The provider
records spans with no exporter, so the figures are the spans' own cost. Rounds are interleaved
and the median of the rounds is printed; target: stage overhead <= 1.2x the bare SDK span's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

from opentelemetry.sdk.trace import TracerProvider

sys.modules.setdefault("bench_target", types.ModuleType("bench_target"))
target = sys.modules["bench_target"]


class Engine:
    def step(self, x: int) -> int:
        return x + 1


class Part:
    def inference(self, x: int) -> int:
        return x


class Holder(Engine):
    """A model runner's shape: parts reached by attribute, traced by ROLE (stage_map.Role)."""

    def __init__(self) -> None:
        self.llm, self.flow, self.hift = Part(), Part(), Part()


target.Engine = Engine
target.Holder = Holder


def main() -> None:
    from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
    from cosyvoice_otel.instrumentation.stage_map import parse_stage_spec

    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    provider = TracerProvider()
    tracer = provider.get_tracer("bench")
    plain = Engine().step

    def sdk_span(x: int) -> int:
        with tracer.start_as_current_span("step"):
            return plain(x)

    import dataclasses

    from cosyvoice_otel.instrumentation.stage_map import PART_ROLES

    inst = CosyVoiceInstrumentor()
    roles_row = dataclasses.replace(parse_stage_spec("tts=bench_target:Holder.step"),
                                    roles=PART_ROLES)
    inst.instrument(tracer_provider=provider, gradio_bridge=False,
                    stages=[parse_stage_spec("step=bench_target:Engine.step"), roles_row])
    staged = Engine().step
    with_roles = Holder().step

    def measure(fn) -> float:
        t0 = time.perf_counter()
        for i in range(args.calls):
            fn(i)
        return (time.perf_counter() - t0) / args.calls

    rounds: dict[str, list[float]] = {"plain": [], "sdk": [], "stage": [], "roles": []}
    for _ in range(args.rounds):
        rounds["plain"].append(measure(plain))
        rounds["sdk"].append(measure(sdk_span))
        rounds["stage"].append(measure(staged))
        rounds["roles"].append(measure(with_roles))
    inst.uninstrument()
    med = {k: statistics.median(v) * 1e6 for k, v in rounds.items()}
    sdk_cost, stage_cost = med["sdk"] - med["plain"], med["stage"] - med["plain"]
    print(f"calls per round: {args.calls}, rounds: {args.rounds} (interleaved)")
    print(f"plain call        {med['plain']:7.3f} us")
    print(f"bare SDK span     {med['sdk']:7.3f} us  (+{sdk_cost:.3f} us)")
    print(f"stage span        {med['stage']:7.3f} us  (+{stage_cost:.3f} us)")
    print(f"stage span + roles {med['roles']:6.3f} us  (+{med['roles'] - med['stage']:.3f} us "
          "for resolving 4 roles)")
    print(f"stage span cost / bare SDK span cost: {stage_cost / sdk_cost:.3f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()
