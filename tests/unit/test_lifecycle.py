"""The traced process's life, SDK side (sdk/lifecycle.py): one clock for every span, the SIGTERM
flush that waits for what delivers in the background, and the configurator installing both."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from cosyvoice_otel.sdk import lifecycle


@pytest.fixture
def span_clock():
    installed = lifecycle.install_span_clock()
    yield
    if installed:
        lifecycle.uninstall_span_clock()


def test_all_spans_share_one_clock_so_a_wall_clock_wobble_cannot_misplace_a_child(
        memory, span_clock, monkeypatch) -> None:
    """Seen under VM load: the wall clock moved 3.5 ms between a parent's start and its
    child's, so the child ended after its parent. Spans are placed by the monotonic clock on
    one wall anchor; a real step (over 50 ms) moves the anchor."""
    import time as time_module

    import opentelemetry.sdk.trace as sdk_trace

    real, shift = time_module.time_ns, [0]
    monkeypatch.setattr(time_module, "time_ns", lambda: real() + shift[0])
    monkeypatch.setattr(sdk_trace, "time_ns", lambda: real() + shift[0])  # the SDK's clock
    tracer = memory.tracer
    with tracer.start_as_current_span("parent"):
        shift[0] = 3_500_000  # +3.5 ms: a wobble
        with tracer.start_as_current_span("child"):
            pass
    spans = {s.name: s for s in memory.spans()}
    assert spans["parent"].start_time <= spans["child"].start_time
    assert spans["child"].end_time <= spans["parent"].end_time
    shift[0] = 3_600 * 10**9  # a real step of an hour: followed
    with tracer.start_as_current_span("after the step"):
        pass
    (after,) = memory.named("after the step")
    assert abs(after.start_time - (real() + shift[0])) < lifecycle.ANCHOR_SLACK_NS
    explicit = tracer.start_span("explicit", start_time=123)
    explicit.end(end_time=456)
    assert (explicit.start_time, explicit.end_time) == (123, 456)


def test_a_reading_interrupted_for_longer_than_the_slack_is_not_a_clock_step(
        monkeypatch) -> None:
    """Under load a thread can be descheduled between the monotonic read and the wall read:
    taken for a step, the anchor moved 53 ms and a vocoder ended past its token2wav."""
    import types

    reads = iter([0, 60_000_000, 60_000_000, 60_000_001])  # 60 ms pass within one reading
    hour = 3600 * 10**9
    walls = iter([10**18 + 60_000_000, 10**18 + hour + 60_000_000])
    fake = types.SimpleNamespace(monotonic_ns=lambda: next(reads), time_ns=lambda: next(walls))
    monkeypatch.setattr(lifecycle, "time", fake)
    anchor = lifecycle.ClockAnchor.__new__(lifecycle.ClockAnchor)
    anchor.offset = 10**18
    assert anchor.wall(0) == 10**18  # the interrupted reading (0 .. 60 ms) changes nothing
    # a tight reading that shows a real step (an hour) is followed
    assert anchor.wall(60_000_000) == 10**18 + hour + 60_000_000


class Clocks:
    """A wall clock and a monotonic one that the test moves by hand."""

    def __init__(self) -> None:
        self.wall, self.mono = 1_700_000_000 * 10**9, 5_000

    def time_ns(self) -> int:
        return self.wall

    def monotonic_ns(self) -> int:
        return self.mono


@pytest.mark.parametrize("wobble_ns", [-10_000_000, 0, 10_000_000])
def test_a_span_lasts_what_the_monotonic_clock_says_whatever_the_wall_does(
        memory, span_clock, monkeypatch, wobble_ns) -> None:
    import types

    import opentelemetry.sdk.trace as sdk_trace

    clocks = Clocks()
    monkeypatch.setattr(lifecycle, "time", types.SimpleNamespace(
        time_ns=clocks.time_ns, monotonic_ns=clocks.monotonic_ns, monotonic=time.monotonic))
    monkeypatch.setattr(sdk_trace, "time_ns", clocks.time_ns)  # the SDK's own clock
    parent = memory.tracer.start_span("parent")
    child = memory.tracer.start_span("child", context=__import__(
        "opentelemetry.trace", fromlist=["x"]).set_span_in_context(parent))
    clocks.mono += 7_000  # 7 us pass
    clocks.wall += 7_000 + wobble_ns  # and the wall clock wobbles (under the anchor's slack)
    child.end()
    parent.end()
    spans = {span.name: span for span in memory.spans()}
    assert spans["parent"].start_time == 1_700_000_000 * 10**9
    assert spans["child"].end_time - spans["child"].start_time == 7_000
    assert spans["parent"].end_time - spans["parent"].start_time == 7_000
    assert spans["child"].parent.span_id == parent.get_span_context().span_id
    explicit = memory.tracer.start_span("explicit")
    explicit.end(clocks.wall + 900)  # an end time given by position is kept
    assert memory.named("explicit")[0].end_time == clocks.wall + 900
    by_name = memory.tracer.start_span("by name")
    by_name.end(end_time=clocks.wall + 800)  # and by keyword
    assert memory.named("by name")[0].end_time == clocks.wall + 800
    # a span started at a time of its own has no monotonic mark: it ends on the wall clock
    own = memory.tracer.start_span("own start", start_time=clocks.wall - 5_000)
    own.end()
    assert memory.named("own start")[0].end_time == clocks.wall


def test_another_tools_wrapper_on_the_sdk_span_is_not_taken_for_ours() -> None:
    import inspect

    import wrapt
    from opentelemetry.sdk.trace import Span

    original = inspect.getattr_static(Span, "start")
    Span.start = wrapt.FunctionWrapper(original, lambda w, i, a, k: w(*a, **k))
    try:
        assert lifecycle.install_span_clock() is True  # installed over the other one
        lifecycle.uninstall_span_clock()  # and removed alone: the other stays
        assert isinstance(inspect.getattr_static(Span, "start"), wrapt.FunctionWrapper)
    finally:
        Span.start = original


def test_the_span_clock_is_installed_once_and_removed_whole(span_clock) -> None:
    import inspect

    import wrapt
    from opentelemetry.sdk.trace import Span

    assert lifecycle.install_span_clock() is False  # already there: not wrapped twice
    assert isinstance(inspect.getattr_static(Span, "start"), wrapt.FunctionWrapper)
    assert not isinstance(inspect.getattr_static(Span, "start").__wrapped__,
                          wrapt.FunctionWrapper)
    lifecycle.uninstall_span_clock()
    assert not isinstance(inspect.getattr_static(Span, "start"), wrapt.FunctionWrapper)
    assert not isinstance(inspect.getattr_static(Span, "end"), wrapt.FunctionWrapper)
    assert lifecycle.install_span_clock() is True  # the fixture removes it again


class SlowDelivery:
    """An exporter that delivers in the background: drain() takes a while."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.drained = threading.Event()
        self.calls: list[float] = []

    def drain(self, timeout_s: float) -> None:
        self.calls.append(timeout_s)
        time.sleep(min(self.seconds, timeout_s))
        self.drained.set()


class Provider:
    def __init__(self) -> None:
        self.flushes: list[int] = []

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushes.append(timeout_millis)
        return True


def test_the_flush_waits_for_background_delivery_before_the_process_dies() -> None:
    """The SIGTERM path: it must WAIT for the exporters (a join that returned at once would
    let the process die with the last batch in flight)."""
    slow = SlowDelivery(0.3)
    provider = Provider()
    lifecycle.flush_everything(provider, [slow.drain], timeout_ms=5000)
    assert slow.drained.is_set()  # delivered before flush_everything returned
    assert len(provider.flushes) == 2 and len(slow.calls) == 4  # twice: late spans go too
    assert all(0 < left <= 5.0 for left in slow.calls)


def test_the_flush_is_bounded_by_its_timeout_whatever_hangs() -> None:
    hung = threading.Event()

    def drain(timeout_s: float) -> None:
        hung.wait(60)  # an exporter stuck for good

    started = threading.Event()

    def run() -> None:
        started.set()
        lifecycle.flush_everything(Provider(), [drain], timeout_ms=200)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)  # generous: a flush that waited for the hung exporter would still run
    hung.set()
    assert started.is_set() and not worker.is_alive()


def test_a_failing_exporter_does_not_stop_the_flush() -> None:
    def broken(timeout_s: float) -> None:
        raise RuntimeError("boom")

    slow = SlowDelivery(0.0)
    provider = Provider()
    lifecycle.flush_everything(provider, [broken, slow.drain], timeout_ms=2000)
    assert slow.drained.is_set() and len(provider.flushes) == 2


def test_the_sigterm_handler_is_installed_only_over_the_default_action(monkeypatch) -> None:
    installed: dict[int, object] = {signal.SIGTERM: signal.SIG_DFL}
    monkeypatch.setattr(signal, "getsignal", lambda sig: installed[sig])
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.__setitem__(sig,
                                                                                      handler))
    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(lifecycle.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    slow = SlowDelivery(0.2)
    provider = Provider()
    handler = lifecycle.install_sigterm_flush(provider, [slow.drain], timeout_ms=5000)
    assert installed[signal.SIGTERM] is handler
    handler(signal.SIGTERM, None)
    # flushed and waited, THEN the default action restored and the signal re-sent
    assert slow.drained.is_set() and provider.flushes
    assert installed[signal.SIGTERM] is signal.SIG_DFL
    assert killed == [(lifecycle.os.getpid(), signal.SIGTERM)]  # to itself
    installed[signal.SIGTERM] = print  # the app's own handler: never replaced
    assert lifecycle.install_sigterm_flush(provider, []) is None


def test_install_drains_the_configured_exporters_and_the_gpu_resolver(monkeypatch) -> None:
    from cosyvoice_otel.instrumentation import gpu_timing

    captured = {}
    monkeypatch.setattr(lifecycle, "install_sigterm_flush",
                        lambda provider, drains: captured.update(provider=provider,
                                                                 drains=drains))
    monkeypatch.setattr(lifecycle, "install_span_clock", lambda: captured.setdefault("clock", 1))
    from cosyvoice_otel import drains

    slow = SlowDelivery(0.0)
    monkeypatch.setattr(drains, "DRAINS", [])
    monkeypatch.setattr(gpu_timing, "_TIMER", None)
    drained = []
    monkeypatch.setattr(gpu_timing.GpuTimer, "drain", lambda self, seconds: drained.append(seconds))
    provider = Provider()
    lifecycle.install(provider, [slow, object()])  # an exporter without drain() is fine
    # the timer is made later, by the instrumentor (once per process): the flush still gets it
    assert gpu_timing.create("events") is gpu_timing.create("auto")
    assert captured["clock"] == 1 and len(captured["drains"]) == 2
    assert captured["provider"] is provider  # the one the SIGTERM flush flushes
    for drain in captured["drains"]:
        drain(1.5)
    assert drained == [1.5] and slow.calls == [1.5]


def test_install_quiets_the_export_io_of_urllib3(monkeypatch) -> None:
    """What the configurator installs includes the filter on urllib3's loggers (the app's
    root logger at DEBUG must not get our export threads' connection lines)."""
    import logging

    monkeypatch.setattr(lifecycle, "install_sigterm_flush", lambda provider, drains: None)
    monkeypatch.setattr(lifecycle, "install_span_clock", lambda: None)
    for name in lifecycle.URLLIB3_LOGGERS:
        logger = logging.getLogger(name)
        for existing in [f for f in logger.filters if isinstance(f, lifecycle.DropExportIO)]:
            monkeypatch.setattr(logger, "filters", [f for f in logger.filters
                                                    if f is not existing])
    lifecycle.install(Provider(), [])
    for name in lifecycle.URLLIB3_LOGGERS:
        assert any(isinstance(f, lifecycle.DropExportIO)
                   for f in logging.getLogger(name).filters), name


def test_export_io_logs_nothing_through_the_apps_root_logger(caplog) -> None:
    """Upstream CosyVoice sets the ROOT logger to DEBUG: urllib3's connection lines from our
    export threads (or a flush inside quiet_io) must not reach the app's log; the app's own
    urllib3 lines still do."""
    import logging

    lifecycle.install_quiet_export_io()
    lifecycle.install_quiet_export_io()  # idempotent: one filter per logger
    pool = logging.getLogger("urllib3.connectionpool")
    assert sum(isinstance(f, lifecycle.DropExportIO) for f in pool.filters) == 1
    seen: list[str] = []

    def log_from(thread_name: str) -> None:
        worker = threading.Thread(target=lambda: pool.debug("Starting new HTTP connection"),
                                  name=thread_name)
        worker.start()
        worker.join()
        seen.append(thread_name)

    with caplog.at_level(logging.DEBUG):
        for name in ("OtelBatchSpanRecordProcessor", "cosyvoice-otel-send", "app-worker"):
            log_from(name)
        with lifecycle.quiet_io():
            pool.debug("a flush on the app's own thread")
        pool.debug("the app's own request")
        with lifecycle.quiet_io():  # nested: quiet until the outer block ends
            with lifecycle.quiet_io():
                pass
            pool.debug("still inside the outer block")
    messages = [(r.threadName, r.getMessage()) for r in caplog.records]
    assert messages == [("app-worker", "Starting new HTTP connection"),
                        ("MainThread", "the app's own request")]


def test_a_processor_still_gets_the_parent_context_at_span_start(span_clock) -> None:
    """The clock wrapper passes the SDK's parent context on: processors read it at on_start."""
    from opentelemetry import context as otel_context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    seen = []

    class Recorder(SpanProcessor):
        def on_start(self, span, parent_context=None) -> None:
            seen.append(otel_context.get_value("marker", parent_context))

    provider = TracerProvider()
    provider.add_span_processor(Recorder())
    marked = otel_context.set_value("marker", "here")
    provider.get_tracer("t").start_span("s", context=marked).end()
    assert seen == ["here"]


def test_the_sigterm_flush_runs_in_a_named_daemon_thread(monkeypatch) -> None:
    """A daemon: a hung exporter can never hold the dying process; named: a thread dump
    says whose it is."""
    made: list[threading.Thread] = []

    class Recorded(threading.Thread):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(lifecycle.threading, "Thread", Recorded)
    lifecycle.flush_everything(Provider(), [], timeout_ms=2000)
    (closing,) = [t for t in made if "sigterm" in t.name]  # (not another test's thread)
    assert closing.daemon and closing.name == "cosyvoice-otel-sigterm"
