"""The CosyVoice instrumentor: stage spans for the synthesis pipeline, plus the Gradio queue bridge.

``opentelemetry-instrument`` loads it by itself through the ``opentelemetry_instrumentor``
entry point (``cosyvoice-traced run`` is that plus configuration). By hand::

    from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
    CosyVoiceInstrumentor().instrument()          # reads COSYVOICE_TRACED_* like the launcher
    CosyVoiceInstrumentor().instrument(stages=[...], gradio_bridge=False, cuda_sync=True)

How it patches:

* lazily: a post-import hook per target module (upstream's webui puts its folder on
  ``sys.path`` only just before ``import cosyvoice``); a module already imported is patched at
  once;
* idempotently: a target already wrapped by us is never wrapped again, and a method a subclass
  inherits from a patched base is left alone; a subclass that OVERRIDES a patched method gets
  its own wrapper (one span per call even when the override calls ``super()``);
* by role: a row's roles (``stage_map.Role``) are resolved from the instance of each call, so
  the classes a model was actually built from are traced, whatever their names;
* reversibly: ``uninstrument()`` restores every original (hooks that fire later do nothing);
* forgivingly: a target missing from its module logs ONE warning naming it; the rest is patched.

Options (keyword > ``COSYVOICE_TRACED_*`` variable > default): ``stage_spans`` (on),
``stages`` / ``COSYVOICE_TRACED_STAGE`` (extra ``NAME=module:Class.method`` rows),
``stage_map`` / ``COSYVOICE_TRACED_STAGE_MAP`` (a TOML file), ``gradio_bridge`` (on),
``gpu_timing`` (``auto``: CUDA events when CUDA is in use), ``cuda_sync`` (off),
``input_limits`` (``on``: text over 200 characters or prompt audio over 15 s marks the request
ERROR with ``text_too_long`` / ``invalid_input_duration``; ``off``; or ``text=N,audio=S``).
Tracing only marks a violation, it never rejects the request.

It only instruments: what happens to the spans and to the process (exporters, sampling, the
SIGTERM flush, the span clock) is the SDK side's (``cosyvoice_otel.sdk``, installed by the
configurator). Besides the stage map, ``PATCHES`` lists the other targets as rows: the Gradio
queue bridge, the streamed-response scope, the routes' declared query names.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeGuard

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,  # (defined there and in its __all__; mypy misses it)
)

from cosyvoice_otel.errors import ERRORS
from cosyvoice_otel.instrumentation import (
    api,
    gpu_timing,
    gradio_bridge,
    output_files,
    routes,
    stage_map,
    stream_scope,
    trace_response,
)
from cosyvoice_otel.instrumentation import metrics as tts_metrics
from cosyvoice_otel.instrumentation.extractors import EXTRACTORS
from cosyvoice_otel.instrumentation.metrics import TtsMetrics
from cosyvoice_otel.instrumentation.options import Options
from cosyvoice_otel.instrumentation.stage_span import StageWrapper
from cosyvoice_otel.settings import Settings, current
from cosyvoice_otel.version import __version__

logger = logging.getLogger("cosyvoice_otel")

__all__ = ["CosyVoiceInstrumentor", "ERRORS", "Options", "PATCHES"]


@dataclass(frozen=True)
class Patch:
    """One patch beside the stage map: a target, the factory of its wrapt wrapper
    ``(tracer, enabled) -> wrapper``, the option that turns it on, and what a missing target
    means (a warning naming it; empty: a debug line, the target is optional)."""

    module: str
    qualname: str
    make: Callable[[trace.Tracer, Callable[[], bool]], Callable[..., Any]]
    option: str  # an Options flag, or "" (always)
    missing: str = ""


_GRPC_SERVER = "opentelemetry.instrumentation.grpc._server"
PATCHES: tuple[Patch, ...] = (
    Patch("gradio.queueing", "Event.__init__", gradio_bridge.event_init, "gradio_bridge",
          "the Gradio bridge is off"),
    Patch("gradio.queueing", "Queue.start", gradio_bridge.queue_start, "gradio_bridge",
          "the Gradio bridge is off"),
    Patch("gradio.queueing", "Queue.process_events", gradio_bridge.process_events,
          "gradio_bridge", "the Gradio bridge is off"),
    # a streamed HTTP response is a request scope (stream_scope.py)
    Patch("starlette.responses", "StreamingResponse.__call__", stream_scope.streaming_response,
          "stage_spans"),
    # the query names the app's routes declare: the only ones kept in exported URLs
    Patch("fastapi.routing", "APIRoute.__init__", routes.api_route_init, ""),
    # the request's own values, registered for masking before its endpoint runs
    Patch("fastapi.routing", "run_endpoint_function", routes.endpoint_values, ""),
    # gRPC: the trace id back to the caller in the trailing metadata (HTTP: the SDK side's
    # response propagator); optional: the app may not serve gRPC at all
    Patch(_GRPC_SERVER, "_OpenTelemetryServicerContext.__init__",
          trace_response.servicer_context_init, "trace_response"),
    Patch(_GRPC_SERVER, "_OpenTelemetryServicerContext.set_trailing_metadata",
          trace_response.set_trailing_metadata, "trace_response"),
    # the WAVs the app writes: their base name and sample digest on the request's span
    # (output_files.py: triage --audio); each optional, the app may use none of them
    Patch("torchaudio", "save", output_files.writer("uri", 0), "stage_spans"),
    Patch("soundfile", "write", output_files.writer("file", 0), "stage_spans"),
    Patch("scipy.io.wavfile", "write", output_files.writer("filename", 0), "stage_spans"),
    Patch("wave", "Wave_write.close", output_files.wave_close, "stage_spans"),
)


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    todo: list[type] = list(cls.__subclasses__())
    while todo:
        sub = todo.pop()
        if sub not in found:
            found.append(sub)
            todo.extend(sub.__subclasses__())
    return found


def _is_our_wrapper(value: object) -> TypeGuard[wrapt.FunctionWrapper[..., Any]]:
    return isinstance(value, wrapt.FunctionWrapper) and getattr(
        value, "_self_cosyvoice_otel", False)


class CosyVoiceInstrumentor(BaseInstrumentor):
    """Stage spans for CosyVoice (the stage map) and the Gradio queue bridge."""

    def instrumentation_dependencies(self) -> Collection[str]:
        # Deliberately empty: CosyVoice is usually run from a checkout, not pip-installed, and
        # the loader silently skips an instrumentor whose dependencies are not installed.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        self._active = True
        # this instrumentation's number: a post-import hook of an earlier one (wrapt keeps
        # them all) must not patch with ITS options a module first imported now
        self._generation = getattr(self, "_generation", 0) + 1
        self._patched: list[tuple[Any, str]] = []
        self._warned: set[str] = set()
        self._adopted: set[tuple[type, str]] = set()
        self._adopt_lock = threading.Lock()
        settings = current()  # the process's settings, resolved (and warned about) once
        self.options = build_options(kwargs, settings)
        tracer_provider = kwargs.get("tracer_provider")
        self._tracer = trace.get_tracer("cosyvoice_otel", __version__,
                                        tracer_provider=tracer_provider)
        rows: tuple[stage_map.Stage, ...] = ()
        if self.options.stage_spans:
            extra = list(kwargs.get("stages") or ())
            try:
                spec = settings.stage
                if spec and kwargs.get("stages") is None:
                    extra.extend(stage_map.parse_stage_specs(spec))
                stage_map.declare_rows(extra)
                path = kwargs.get("stage_map") or settings.stage_map
                if path:  # the same object the settings' check read (one read per process)
                    source = stage_map.stage_source(path)
                    stage_map.declare_source(source)
                    extra.extend(source.rows)
            except (stage_map.StageMapError, ValueError) as exc:
                logger.warning("cosyvoice-otel: %s; using the built-in stage map only", exc)
            rows = stage_map.build("cosyvoice", extra)
        by_module: dict[str, list[stage_map.Stage]] = {}
        for row in rows:
            by_module.setdefault(row.module, []).append(row)
        self._rows = by_module
        for module_name in by_module:
            self._when_imported(module_name, self._patch_module)
        for patch in PATCHES:
            if not patch.option or getattr(self.options, patch.option):
                self._when_imported(patch.module, lambda module, patch=patch:
                                    self._apply(module, patch))
        if self.options.stage_spans:  # the app's own stages (cosyvoice_otel.stage)
            api.activate(tracer_provider, self.options)

    def _when_imported(self, module_name: str, patch: Any) -> None:
        generation = self._generation

        def hook(module: Any) -> None:
            if self._active and self._generation == generation:
                patch(module)

        # wrapt calls the hook at once when the module is already imported
        wrapt.register_post_import_hook(hook, module_name)

    def _enabled(self) -> bool:
        return self._active

    # -- patching
    def _wrap(self, owner: Any, attr: str, wrapper: Any) -> None:
        wrapped = wrapt.FunctionWrapper(inspect.getattr_static(owner, attr), wrapper)
        wrapped._self_cosyvoice_otel = True  # type: ignore[attr-defined]  # wrapt's _self_ slot
        setattr(owner, attr, wrapped)
        self._patched.append((owner, attr))

    def _resolve(self, module: Any, qualname: str) -> tuple[Any, str, Any] | None:
        owner: Any = module
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part, None)
            if owner is None:
                return None
        if not hasattr(owner, attr):
            return None
        return owner, attr, getattr(owner, attr)

    def _patch_module(self, module: Any) -> None:
        for row in self._rows.get(module.__name__, ()):
            try:
                self._patch_row(module, row)
            except Exception as exc:  # noqa: BLE001
                self._warn(row.target, f"could not be patched ({type(exc).__name__}: {exc})")

    def _patch_row(self, module: Any, row: stage_map.Stage) -> None:
        found = self._resolve(module, row.qualname)
        if found is None:
            if row.optional:
                logger.debug("cosyvoice-otel: optional target %s not found", row.target)
            else:
                self._warn(row.target, "not found; that stage will have no span")
            return
        owner, attr, _ = found
        self._patch_target(owner, attr, row)
        if inspect.isclass(owner):  # subclasses that override the method get their own span
            for sub in _subclasses(owner):
                if attr in sub.__dict__:
                    self._patch_target(sub, attr, row)

    def _patch_target(self, owner: Any, attr: str, row: stage_map.Stage) -> None:
        extractor = EXTRACTORS.get(row.extractor)
        if extractor is None:  # a row made in code (a stage file's are checked when read)
            self._warn(row.target, f"names the unknown extractor {row.extractor!r} (known: "
                                   f"{', '.join(sorted(EXTRACTORS))}); not traced")
            return
        raw = inspect.getattr_static(owner, attr)  # walks the MRO without binding
        if _is_our_wrapper(raw):
            return  # idempotent; or inherited from a base class we already patched
        current = getattr(owner, attr)
        original = inspect.unwrap(current) if callable(current) else current
        if isinstance(raw, (staticmethod, classmethod)):
            self._warn(row.target, "is a static/class method; not supported")
            return
        params = list(inspect.signature(original).parameters)
        if inspect.isclass(owner) and params and params[0] in ("self", "cls"):
            params = params[1:]
        wrapper = StageWrapper(self._tracer, row, extractor,
                               self.options, {name: i for i, name in enumerate(params)},
                               inspect.isgeneratorfunction(original), self._enabled,
                               self._adopt if row.roles else None)
        self._wrap(owner, attr, wrapper)

    def _adopt(self, instance: Any, roles: tuple[stage_map.Role, ...]) -> None:
        """Trace the classes this instance's parts actually have (once per class and method)."""
        for role in roles:
            part = instance
            for name in role.path.split("."):
                part = getattr(part, name, None)
            if part is None:
                continue
            key = (type(part), role.method)
            if key in self._adopted:  # the common case: one set lookup per role and call
                continue
            with self._adopt_lock:
                if key not in self._adopted:
                    self._adopted.add(key)
                    self._adopt_part(type(part), role)

    def _adopt_part(self, cls: type, role: stage_map.Role) -> None:
        owner = next((klass for klass in cls.__mro__ if role.method in klass.__dict__), None)
        where = f"{cls.__module__}:{cls.__qualname__}.{role.method}"
        if owner is None or owner.__module__.split(".")[0] in ("builtins", "torch"):
            if role.required:
                self._warn(where, f"(role {role.path}.{role.method}) not found; "
                                  f"that stage will have no span")
            return
        try:
            self._patch_target(owner, role.method, role.stage_for(owner))
        except Exception as exc:  # noqa: BLE001
            self._warn(where, f"could not be patched ({type(exc).__name__}: {exc})")

    def _apply(self, module: Any, patch: Patch) -> None:
        found = self._resolve(module, patch.qualname)
        if found is None:
            if patch.missing:
                self._warn(f"{patch.module}:{patch.qualname}", f"not found; {patch.missing}")
            else:
                logger.debug("cosyvoice-otel: %s:%s not found", patch.module, patch.qualname)
            return
        owner, attr, _ = found
        if not _is_our_wrapper(inspect.getattr_static(owner, attr)):
            self._wrap(owner, attr, patch.make(self._tracer, self._enabled))

    def _warn(self, target: str, why: str) -> None:
        if target not in self._warned:
            self._warned.add(target)
            logger.warning("cosyvoice-otel: stage target %s %s", target, why)

    def _uninstrument(self, **kwargs: Any) -> None:
        """Undo all that ``_instrument`` did: post-import hooks go inert (wrapt cannot remove
        them), every patch is restored."""
        self._active = False
        self._adopted.clear()
        api.deactivate()
        for owner, attr in reversed(self._patched):
            current = owner.__dict__.get(attr) if hasattr(owner, "__dict__") else None
            if _is_our_wrapper(current):
                setattr(owner, attr, current.__wrapped__)
        self._patched.clear()

    # -- introspection for tools and tests
    def patched_targets(self) -> list[str]:
        return [f"{getattr(o, '__module__', getattr(o, '__name__', '?'))}:"
                f"{getattr(o, '__qualname__', getattr(o, '__name__', '?'))}.{a}"
                for o, a in self._patched]



def build_options(kwargs: dict[str, Any], settings: Settings) -> Options:
    """The options the wrappers read: the plain values, then the recorders they name (a
    metrics failure is one warning, tracing goes on)."""
    options = Options.resolve(kwargs, settings)
    recorder: TtsMetrics | None = None
    if options.metrics_on:
        try:
            recorder = tts_metrics.create(kwargs.get("meter_provider"), settings.service_version)
        except Exception as exc:  # noqa: BLE001 - metrics must never stop tracing
            logger.warning("cosyvoice-otel: metrics are off (%s: %s)", type(exc).__name__, exc)
    timer = gpu_timing.create(options.gpu_timing_mode)
    return dataclasses.replace(options, metrics=recorder, gpu_timing=timer)
