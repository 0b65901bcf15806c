"""GPU-honest stage time without serialising the GPU: CUDA events, resolved off the request path.

CUDA kernels run asynchronously: a stage's Python call returns when its kernels are QUEUED, so
its wall time says little (``flow`` can look instant and its time land in ``vocoder``, whichever
stage first copies to the CPU). ``--cuda-sync`` fixes that by calling
``torch.cuda.synchronize()`` at every stage end, which serialises the GPU and slows serving.

``--gpu-timing events`` (the default when CUDA is in use) instead records a CUDA event on the
current stream at the stage's start and at its end: two ``record()`` calls, no wait. The span's
wall-clock end is taken at once (``end_time``), but the span itself is ended by a background
resolver thread, which waits for the END EVENT (not the device, not the app's thread), reads
``start.elapsed_time(end)`` into ``cosyvoice.gpu.ms`` and then ends the span. So:

* ``cosyvoice.gpu.ms``: GPU time between the stage's start and end on its stream (kernels of
  other streams, e.g. the LLM thread's own stream, are not in it);
* the span's duration stays the wall time of the Python call (what the app waited);
* ``cosyvoice.gpu.memory_delta_bytes``: ``memory_allocated()`` at end minus at start (a host
  counter of the caching allocator: no sync, per stage, unaffected by other requests' peaks);
* ``cuda.peak_memory_bytes`` only when no other stage of another request ran on the GPU
  meanwhile (``cosyvoice.gpu.peak_exclusive=true`` says so): ``reset_peak_memory_stats`` is
  process-wide, so under concurrency a peak would be another request's.

Bounded: at most ``MAX_PENDING`` stages wait for their events; beyond that a stage ends at once
without GPU figures (counted in ``GpuTimer.skipped``). A CUDA API we cannot use is one warning
and GPU timing off; the app never waits for it.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Any

from cosyvoice_otel import drains
from cosyvoice_otel import schema as s
from cosyvoice_otel.errors import note_error

logger = logging.getLogger("cosyvoice_otel")

MAX_PENDING = 4096


def torch_cuda() -> Any:
    """torch.cuda when the app imported torch and uses CUDA; None otherwise. Never imports
    torch, never initialises CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        cuda = torch.cuda
        return cuda if cuda.is_available() and cuda.is_initialized() else None
    except Exception:  # noqa: BLE001 - a broken driver is "no GPU" for tracing
        return None


class GpuMark:
    """What one stage recorded at its start."""

    __slots__ = ("start", "allocated", "generation")

    def __init__(self, start: Any, allocated: int, generation: int) -> None:
        self.start, self.allocated, self.generation = start, allocated, generation


class GpuTimer:
    """CUDA-event timing of stage spans; ``cuda`` is torch.cuda (or a stand-in in tests)."""

    def __init__(self, cuda: Any = None, mode: str = "auto") -> None:
        self._fixed = cuda  # a given API (tests); else torch.cuda, looked up per stage
        self.mode = mode
        self._queue: queue.Queue[tuple[Any, GpuMark, Any, int, int, int] | None] = queue.Queue(
            MAX_PENDING)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._active = 0  # stages with a mark, not yet ended
        self._generation = 0  # bumped at each stage start: "did another stage start since?"
        self.skipped = 0
        self.resolved = 0

    def _cuda(self) -> Any:
        return self._fixed if self._fixed is not None else torch_cuda()

    def start(self) -> GpuMark | None:
        """At a stage's start (request thread): one event recorded, no wait."""
        cuda = self._cuda()
        if cuda is None:
            return None
        try:
            event = cuda.Event(enable_timing=True)
            event.record()
            with self._lock:
                self._active += 1
                self._generation += 1
                alone = self._active == 1
                generation = self._generation
            if alone:
                cuda.reset_peak_memory_stats()  # nothing else on the GPU of ours right now
            return GpuMark(event, int(cuda.memory_allocated()), generation if alone else -1)
        except Exception as exc:  # noqa: BLE001
            note_error("gpu timing start", exc)
            return None

    def end(self, span: Any, mark: GpuMark, end_time: int) -> bool:
        """At a stage's end (request thread): record the end event and hand the span to the
        resolver, which ends it. False when the span must be ended by the caller now."""
        cuda = self._cuda()
        try:
            with self._lock:
                self._active = max(0, self._active - 1)
                exclusive = mark.generation == self._generation
            if cuda is None:
                return False
            event = cuda.Event(enable_timing=True)
            event.record()
            allocated = int(cuda.memory_allocated())
            peak = int(cuda.max_memory_allocated()) if exclusive else -1
            self._queue.put_nowait((span, mark, event, end_time, allocated - mark.allocated,
                                    peak))
        except queue.Full:
            self.skipped += 1
            return False
        except Exception as exc:  # noqa: BLE001
            note_error("gpu timing end", exc)
            return False
        self._ensure_thread()
        return True

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._resolve_loop,
                                                name="cosyvoice-otel-gpu", daemon=True)
                self._thread.start()

    def _resolve_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._resolve(*item)
            finally:
                self._queue.task_done()

    def _resolve(self, span: Any, mark: GpuMark, end_event: Any, end_time: int, delta: int,
                 peak: int) -> None:
        try:
            end_event.synchronize()  # this thread waits for the stage's kernels, no one else
            span.set_attribute(s.GPU_MS, round(float(mark.start.elapsed_time(end_event)), 3))
            span.set_attribute(s.GPU_MEMORY_DELTA, delta)
            if peak >= 0:
                span.set_attribute(s.CUDA_PEAK_BYTES, peak)
                span.set_attribute(s.GPU_PEAK_EXCLUSIVE, True)
            self.resolved += 1
        except Exception as exc:  # noqa: BLE001
            note_error("gpu timing resolve", exc)
        finally:
            span.end(end_time=end_time)

    def drain(self, timeout_s: float) -> bool:
        """Until every handed-over span has ended (bounded; the SIGTERM flush waits here)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks


_TIMER: GpuTimer | None = None


def create(mode: str) -> GpuTimer | None:
    """The process's timer for ``--gpu-timing auto|events`` (None for off): one resolver
    thread per process, started at the first timed stage."""
    global _TIMER
    if mode == "off":
        return None
    if _TIMER is None:
        _TIMER = GpuTimer(mode=mode)
        drains.register(_TIMER.drain)  # the SIGTERM flush resolves what is still pending
    return _TIMER


def active_timer() -> GpuTimer | None:
    return _TIMER
