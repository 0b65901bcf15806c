"""The stage wrapper on plain functions and generators (no demo engine): when the span starts
and ends, which context is current where, what the extractor sees, and that nothing of
tracing ever reaches the wrapped code's caller."""

from __future__ import annotations

import types
from collections import Counter

import pytest
import wrapt
from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cosyvoice_otel import errors
from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import stage_span
from cosyvoice_otel.instrumentation.stage_map import Stage
from cosyvoice_otel.instrumentation.stage_span import StageWrapper

from ..support.tracing import stage_options

OPTIONS = stage_options()


class Recorder:
    """An extractor that writes down what it was given."""

    name = "recorder"

    def __init__(self, fail: str = "") -> None:
        self.seen: list = []
        self.fail = fail

    def start(self, stage, call) -> None:
        self.seen.append(("start", call.arg("x"), trace.get_current_span() is stage.span))
        if self.fail == "start":
            raise ValueError("start broke")

    def item(self, stage, item) -> None:
        self.seen.append(("item", item))
        if self.fail == "item":
            raise ValueError("item broke")

    def end(self, stage, result) -> None:
        self.seen.append(("end", result))
        if self.fail == "end":
            raise ValueError("end broke")


@pytest.fixture
def rig(monkeypatch):
    monkeypatch.setattr(errors, "ERRORS", Counter())
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("cosyvoice_otel")
    state = {"enabled": True}

    def wrap(func, extractor=None, span="stage", generator=False):
        recorder = extractor or Recorder()
        row = Stage("m", "f", span, "recorder", (("fixed", "yes"),))
        wrapper = StageWrapper(tracer, row, recorder, OPTIONS,
                               {"x": 0}, generator, lambda: state["enabled"])
        return wrapt.FunctionWrapper(func, wrapper), recorder

    return types.SimpleNamespace(wrap=wrap, memory=memory, tracer=tracer, state=state)


def spans(rig) -> list:
    return list(rig.memory.get_finished_spans())


def test_a_call_gets_a_span_current_inside_with_the_rows_attributes(rig) -> None:
    seen = {}

    def work(x, y=0):
        seen["current"] = trace.get_current_span()
        return x + y

    traced, recorder = rig.wrap(work)
    with rig.tracer.start_as_current_span("outer") as outer:
        assert traced(2, y=3) == 5
        assert trace.get_current_span() is outer  # restored after the call
    (span, _) = spans(rig)
    assert span.name == "stage" and span.attributes["fixed"] == "yes"
    assert span.parent.span_id == outer.get_span_context().span_id
    assert seen["current"].get_span_context().span_id == span.context.span_id
    assert recorder.seen == [("start", 2, False), ("end", 5)]


def test_an_exception_marks_the_span_ends_it_and_reaches_the_caller(rig) -> None:
    def work(x):
        raise KeyError("app bug")

    traced, recorder = rig.wrap(work)
    with pytest.raises(KeyError):
        traced(1)
    (span,) = spans(rig)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[s.ERROR_TYPE] == "KeyError"
    assert recorder.seen == [("start", 1, False)]  # no end extraction of a failed call


@pytest.mark.parametrize("broken", ["start", "end"])
def test_a_broken_extractor_is_counted_and_the_call_goes_on(rig, broken) -> None:
    traced, _ = rig.wrap(lambda x: x * 2, extractor=Recorder(fail=broken))
    assert traced(4) == 8
    assert len(spans(rig)) == 1
    assert errors.ERRORS == {f"extractor recorder.{broken}": 1}


def test_disabled_or_suppressed_tracing_calls_straight_through(rig) -> None:
    traced, recorder = rig.wrap(lambda x: x)
    rig.state["enabled"] = False
    assert traced(1) == 1
    assert traced(x=3) == 3  # keywords too
    rig.state["enabled"] = True
    with suppress_instrumentation():
        assert traced(2) == 2
    assert spans(rig) == [] and recorder.seen == []


def test_an_override_calling_super_gives_one_span(rig) -> None:
    class Base:
        def run(self, x):
            return x

    class Child(Base):
        def run(self, x):
            return super().run(x) + 1

    row_base, _ = rig.wrap(Base.run)
    Base.run = row_base
    Child.run, _ = rig.wrap(Child.__dict__["run"])
    assert Child().run(1) == 2
    assert [sp.name for sp in spans(rig)] == ["stage"]
    assert Base().run(5) == 5 and len(spans(rig)) == 2  # the base alone: its own span


def test_a_failure_to_start_the_span_is_counted_and_the_call_runs(rig, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no span today")

    traced, _ = rig.wrap(lambda x: x + 1)
    monkeypatch.setattr(stage_span, "StageSpan", broken)
    assert traced(1) == 2
    assert errors.ERRORS == {"start m:f": 1}


# ------------------------------------------------------------------------ generators

def counting(n, log):
    log.append(("current", trace.get_current_span().get_span_context().span_id))
    total = 0
    for i in range(n):
        got = yield i
        total += got or 0
    return total


def test_a_generator_span_runs_from_first_next_to_the_end(rig) -> None:
    log: list = []
    traced, recorder = rig.wrap(counting, generator=True)
    with rig.tracer.start_as_current_span("outer") as outer:
        gen = traced(3, log)
        assert spans(rig) == [] and log == []  # nothing runs before the first next()
        assert next(gen) == 0
        assert trace.get_current_span() is outer  # not current across the yield
        assert gen.send(10) == 1
        assert gen.send(5) == 2
        with pytest.raises(StopIteration) as stop:
            gen.send(1)
    assert stop.value.value == 16  # the generator's return value comes through
    (span, _) = spans(rig)
    assert log == [("current", span.context.span_id)]  # its own code ran under its span
    assert s.ABANDONED not in span.attributes
    assert recorder.seen == [("start", 3, False), ("item", 0), ("item", 1), ("item", 2),
                             ("end", None)]


def test_an_abandoned_generator_is_closed_inside_its_span_and_marked(rig) -> None:
    closed = []

    def stream():
        try:
            yield 1
            yield 2
        finally:
            closed.append(trace.get_current_span().get_span_context().span_id)

    traced, _ = rig.wrap(stream, generator=True)
    gen = traced()
    next(gen)
    gen.close()
    (span,) = spans(rig)
    assert span.attributes[s.ABANDONED] is True
    assert closed == [span.context.span_id]


def test_exceptions_thrown_in_are_forwarded_and_raised_ones_mark_the_span(rig) -> None:
    def stream():
        try:
            yield 1
        except ValueError:
            yield "handled"
        raise KeyError("later")

    traced, _ = rig.wrap(stream, generator=True)
    gen = traced()
    next(gen)
    assert gen.throw(ValueError("from the consumer")) == "handled"
    with pytest.raises(KeyError):
        next(gen)
    (span,) = spans(rig)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[s.ERROR_TYPE] == "KeyError" and s.ABANDONED not in span.attributes


def test_a_broken_item_extractor_never_stops_the_stream(rig) -> None:
    traced, _ = rig.wrap(lambda: (i for i in range(3)), extractor=Recorder(fail="item"),
                         generator=True)
    assert list(traced()) == [0, 1, 2]
    assert errors.ERRORS == {"extractor recorder.item": 3}


def test_a_disabled_generator_is_returned_untouched(rig) -> None:
    made = (i for i in range(2))
    traced, _ = rig.wrap(lambda: made, generator=True)
    rig.state["enabled"] = False
    assert traced() is made
    rig.state["enabled"] = True
    with suppress_instrumentation():
        assert list(traced()) == [0, 1]  # suppressed: the items pass, no span
    assert spans(rig) == []


def test_context_attach_and_detach_failures_are_counted(monkeypatch) -> None:
    monkeypatch.setattr(errors, "ERRORS", Counter())
    monkeypatch.setattr(context, "attach", lambda ctx: 1 / 0)
    assert stage_span._attach(context.Context()) is None
    stage_span._detach(None)  # nothing attached: nothing to do
    monkeypatch.setattr(context, "detach", lambda token: 1 / 0)
    stage_span._detach(object())
    assert errors.ERRORS == {"context.attach": 1, "context.detach": 1}


# -- roles, argument rewrites, the close hook, late parents (issues 9 and 10) --------------------

def wrapper_for(rig, extractor, generator=False, adopt=None, late_parent=False, roles=()):
    row = Stage("m", "f", "stage", "recorder", (), tuple(roles), late_parent)
    return StageWrapper(rig.tracer, row, extractor, OPTIONS,
                        {"x": 0}, generator, lambda: rig.state["enabled"], adopt)


def test_roles_are_adopted_from_the_calls_instance_only_when_enabled(rig) -> None:
    adopted = []
    wrapper = wrapper_for(rig, Recorder(), adopt=lambda inst, roles: adopted.append((inst, roles)),
                          roles=("r",))
    owner = object()
    assert wrapper(lambda x: x + 1, owner, (1,), {}) == 2
    assert wrapper(lambda x: x + 1, None, (1,), {}) == 2  # a plain function: nothing to adopt
    rig.state["enabled"] = False
    assert wrapper(lambda x: x + 1, owner, (1,), {}) == 2
    assert adopted == [(owner, ("r",))]


def test_a_failing_adoption_is_counted_and_the_call_goes_on(rig) -> None:
    def broken(instance, roles):
        raise RuntimeError("adopt broke")

    wrapper = wrapper_for(rig, Recorder(), adopt=broken)
    assert wrapper(lambda x: x * 3, object(), (2,), {}) == 6
    assert errors.ERRORS == {"roles of m:f": 1}
    assert len(spans(rig)) == 1


class Rewriter(Recorder):
    def __init__(self, fail: str = "") -> None:
        super().__init__(fail)

    def rewrite(self, call) -> None:
        if self.fail == "rewrite":
            raise ValueError("rewrite broke")
        call.replace("x", call.arg("x") * 10)


@pytest.mark.parametrize(("args", "kwargs"), [((1,), {}), ((), {"x": 1})])
def test_a_rewrite_replaces_the_argument_the_generator_gets(rig, args, kwargs) -> None:
    def gen(x):
        yield x

    wrapper = wrapper_for(rig, Rewriter(), generator=True)
    assert list(wrapper(gen, None, args, kwargs)) == [10]
    rig.state["enabled"] = False  # off: the call is left alone
    assert list(wrapper(gen, None, args, kwargs)) == [1]


def test_a_failing_rewrite_is_counted_and_the_original_arguments_are_used(rig) -> None:
    def gen(x):
        yield x

    wrapper = wrapper_for(rig, Rewriter(fail="rewrite"), generator=True)
    assert list(wrapper(gen, None, (7,), {})) == [7]
    assert errors.ERRORS == {"extractor recorder.rewrite": 1}


def test_call_replace_by_position_by_keyword_or_added() -> None:
    from cosyvoice_otel.instrumentation.stage_span import Call

    positional = Call(None, (1, 2, 3), {}, {"a": 0, "b": 1, "c": 2})
    positional.replace("b", 20)
    assert (positional.args, positional.kwargs) == ((1, 20, 3), {})
    keyword = Call(None, (1,), {"b": 2}, {"a": 0, "b": 1})
    keyword.replace("b", 20)
    assert (keyword.args, keyword.kwargs) == ((1,), {"b": 20})
    missing = Call(None, (1,), {}, {"a": 0, "b": 1})  # b not given: passed as a keyword
    missing.replace("b", 20)
    assert (missing.args, missing.kwargs) == ((1,), {"b": 20})
    unknown = Call(None, (), {}, {})
    unknown.replace("z", 1)
    assert unknown.kwargs == {"z": 1}


class Closer(Recorder):
    def __init__(self, fail: str = "") -> None:
        super().__init__(fail)
        self.reasons: list = []

    def close(self, stage, reason) -> None:
        self.reasons.append((stage.name, reason))
        if self.fail == "close":
            raise ValueError("close broke")


def test_the_close_hook_hears_how_each_stage_ended(rig) -> None:
    closer = Closer()
    call = wrapper_for(rig, closer)
    assert call(lambda x: x, None, (1,), {}) == 1

    def boom(x):
        raise KeyError(x)

    with pytest.raises(KeyError):
        call(boom, None, (1,), {})

    def gen(x):
        yield from range(3)

    stream = wrapper_for(rig, closer, generator=True)
    assert list(stream(gen, None, (1,), {})) == [0, 1, 2]
    left = stream(gen, None, (1,), {})
    next(left)
    left.close()
    assert closer.reasons == [("stage", "completed"), ("stage", "error"), ("stage", "completed"),
                              ("stage", "interrupted")]


def test_a_failing_close_is_counted_and_the_span_still_ends(rig) -> None:
    call = wrapper_for(rig, Closer(fail="close"))
    assert call(lambda x: x, None, (1,), {}) == 1
    assert errors.ERRORS == {"extractor close": 1}
    assert len(spans(rig)) == 1


def test_an_extractor_without_close_sets_no_hook(rig) -> None:
    stages = []
    original = stage_span.StageSpan.end

    def spy(self, abandoned=False):
        stages.append(self.on_end)
        return original(self, abandoned)

    stage_span.StageSpan.end = spy
    try:
        wrapper_for(rig, Recorder())(lambda x: x, None, (1,), {})
        wrapper_for(rig, Closer())(lambda x: x, None, (1,), {})
    finally:
        stage_span.StageSpan.end = original
    assert stages[0] is None and stages[1] is not None


@pytest.mark.parametrize("late", [False, True])
def test_a_late_parent_is_what_is_current_at_the_first_step(rig, late) -> None:
    def gen(x):
        yield x

    wrapper = wrapper_for(rig, Recorder(), generator=True, late_parent=late)
    with rig.tracer.start_as_current_span("maker") as maker:
        made = wrapper(gen, None, (1,), {})
    with rig.tracer.start_as_current_span("consumer") as consumer:
        assert list(made) == [1]
    stage = next(sp for sp in spans(rig) if sp.name == "stage")
    expected = consumer if late else maker
    assert stage.parent.span_id == expected.get_span_context().span_id


class FirstAndCount:
    """An extractor with a first-item hook, and a close that reads the count of items."""

    name = "first"

    def __init__(self) -> None:
        self.seen: list = []

    def start(self, stage, call) -> None:
        self.seen.append(("instance", call.instance))

    def first_item(self, stage, item) -> None:
        self.seen.append(("first", item))

    def close(self, stage, reason) -> None:
        self.seen.append(("count", stage.count))


class BrokenRewrite(FirstAndCount):
    def rewrite(self, call) -> None:
        raise ValueError("rewrite broke")


@pytest.mark.parametrize("extractor_type", [FirstAndCount, BrokenRewrite])
def test_a_generator_stage_hears_its_first_item_once_and_counts_them_all(rig, extractor_type
                                                                         ) -> None:
    """With a rewrite that breaks too: the call (and its instance) as it was made."""
    extractor = extractor_type()
    wrapper = StageWrapper(rig.tracer, Stage("m", "K.gen", "stage", "first"), extractor,
                           OPTIONS, {}, True, lambda: True)

    class K:
        def gen(self, n):
            yield from (f"item{i}" for i in range(n))

    K.gen = wrapt.FunctionWrapper(K.__dict__["gen"], wrapper)  # bound: the call's instance
    k = K()
    with rig.tracer.start_as_current_span("outer"):
        assert list(k.gen(3)) == ["item0", "item1", "item2"]
    assert extractor.seen == [("instance", k), ("first", "item0"), ("count", 3)]


class BrokenFirst(Recorder):
    def first_item(self, stage, item) -> None:
        raise ValueError("first_item broke")


def test_a_broken_first_item_extractor_is_counted_once_and_never_stops_the_stream(rig) -> None:
    traced, _ = rig.wrap(lambda: (i for i in range(3)), extractor=BrokenFirst(),
                         generator=True)
    assert list(traced()) == [0, 1, 2]
    assert errors.ERRORS == {"extractor recorder.first_item": 1}


class HalfRewrite(Recorder):
    """Replaces an argument, then breaks: the call must be made as the app made it."""

    def rewrite(self, call) -> None:
        call.replace("x", "rewritten")
        raise ValueError("rewrite broke halfway")


def test_a_rewrite_that_breaks_halfway_leaves_the_call_as_the_app_made_it(rig) -> None:
    def stream(x):
        yield x

    traced, _ = rig.wrap(stream, extractor=HalfRewrite(), generator=True)
    assert list(traced("as sent")) == ["as sent"]
    assert errors.ERRORS == {"extractor recorder.rewrite": 1}
