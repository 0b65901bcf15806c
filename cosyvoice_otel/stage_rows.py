"""What a stage row IS and how a user writes one (``--stage``, ``--stage-map FILE``): plain data.

On the ground floor because both the settings table (which checks ``--stage`` and
``--stage-map`` when they are given) and the instrumentation (``stage_map.py``: the built-in
profile; ``instrumentor.py``: the patching) read rows. A row names ``module:Class.method`` (or
``module:function``), the span it becomes, the extractor that reads sizes and counts from the
call (one of ``schema.EXTRACTORS``), and fixed attributes; ROLES name parts reached from the
call's instance (see ``instrumentation/stage_map.py``).

``--stage-map`` TOML::

    [[stage]]
    target = "myfork.engine:Engine.vocode"
    span = "vocoder"
    extractor = "vocoder"             # optional, default "none"
    attributes = { backend = "trt" }  # optional fixed attributes

    [[declare]]                       # a stage of the app's own (cosyvoice_otel.stage)
    span = "emotion_tagging"
    meaning = "tags the text with an emotion"

    [[reason]]                        # an error reason of the app's own (cosyvoice_otel.fail)
    name = "asr_empty_result"
    meaning = "the transcriber returned no text"

A file may hold only declarations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cosyvoice_otel.schema import EXTRACTORS


class StageMapError(ValueError):
    """A stage row or file is malformed; the message names it."""


def _check_extractor(name: str, where: str) -> None:
    """Every row names a registered extractor (``schema.EXTRACTORS``, the names of
    ``instrumentation/extractors.py``'s registry; a test keeps them equal): an unknown name is
    refused where the row is made, never silently traced without attributes."""
    if name not in EXTRACTORS:
        raise StageMapError(f"{where}: unknown extractor {name!r}; "
                            f"known: {', '.join(sorted(EXTRACTORS))}")


@dataclass(frozen=True)
class Role:
    """``method`` of the part at ``path`` (attribute names, dotted) of a traced call's instance."""

    path: str
    method: str
    span: str
    extractor: str = "none"
    attributes: tuple[tuple[str, Any], ...] = field(default=())
    roles: tuple[Role, ...] = field(default=())  # resolved in turn from the part's calls
    late_parent: bool = False
    required: bool = True  # a part without the method is a warning (else: debug)
    def stage_for(self, owner: type) -> Stage:
        """The row of the class that defines the method for this part."""
        return Stage(owner.__module__, f"{owner.__qualname__}.{self.method}", self.span,
                     self.extractor, self.attributes, self.roles, self.late_parent)


@dataclass(frozen=True)
class Stage:
    module: str
    qualname: str  # "Class.method" or "function"
    span: str
    extractor: str = "none"
    attributes: tuple[tuple[str, Any], ...] = field(default=())
    roles: tuple[Role, ...] = field(default=())
    # a generator whose span's parent is what is current at its first step, not at its call
    # (the streamed-text generator: made by the frontend, consumed inside the LLM's span)
    late_parent: bool = False
    optional: bool = False  # absent in some CosyVoice versions: debug log, not a warning
    @property
    def target(self) -> str:
        return f"{self.module}:{self.qualname}"


def row(target: str, span: str, extractor: str = "none", roles: tuple[Role, ...] = (),
        optional: bool = False, attributes: dict[str, Any] | None = None) -> Stage:
    module, _, qualname = target.partition(":")
    return Stage(module, qualname, span, extractor, tuple((attributes or {}).items()), roles,
                 optional=optional)


_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$")


def parse_stage_spec(spec: str) -> Stage:
    """``NAME=module:Class.method`` -> a Stage (extractor none)."""
    name, sep, target = spec.strip().partition("=")
    if not sep or not name.strip() or not _TARGET.match(target.strip()):
        raise StageMapError(f"bad stage {spec!r}: expected NAME=module:Class.method")
    return row(target.strip(), name.strip())


def parse_stage_specs(text: str) -> tuple[Stage, ...]:
    return tuple(parse_stage_spec(part) for part in text.split(";") if part.strip())


def _read(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StageMapError(f"stage map {path}: {exc}") from None


@dataclass(frozen=True)
class StageSource:
    """A stage-map file, read and checked once: its ``[[stage]]`` rows and its ``[[declare]]``
    / ``[[reason]]`` declarations as (kind, name, meaning). Whoever needs the file in a process
    (the option's check, the instrumentor, ``schema --stage-map``) gets this object."""

    path: str
    rows: tuple[Stage, ...]
    declarations: tuple[tuple[str, str, str], ...]


# path -> (what identifies the file's version, what it held): one read per process and version
_loaded: dict[str, tuple[tuple[int, int, int], StageSource]] = {}


def stage_source(path: str) -> StageSource:
    """The file at ``path``, parsed once per process (again only if the file changed)."""
    import os

    try:
        info = os.stat(path)
    except OSError as exc:
        raise StageMapError(f"stage map {path}: {exc}") from None
    version = (info.st_ino, info.st_size, info.st_mtime_ns)
    cached = _loaded.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    source = _parse(path, _read(path))
    _loaded[path] = (version, source)
    return source


def _parse(path: str, data: dict[str, Any]) -> StageSource:
    from cosyvoice_otel.schema import check_name

    rows = []
    for i, item in enumerate(_items(data, "stage", path)):
        where = f"stage map {path}, stage #{i + 1}"
        target, span = item.get("target", ""), item.get("span", "")
        if not isinstance(target, str) or not _TARGET.match(target):
            raise StageMapError(f"{where}: target must be module:Class.method, got {target!r}")
        if not isinstance(span, str) or not span:
            raise StageMapError(f"{where}: span must be a non-empty string")
        extractor = item.get("extractor", "none")
        _check_extractor(extractor if isinstance(extractor, str) else repr(extractor), where)
        attributes = item.get("attributes", {})
        if not isinstance(attributes, dict):
            raise StageMapError(f"{where}: attributes must be a table")
        module, _, qualname = target.partition(":")
        rows.append(Stage(module, qualname, span, extractor, tuple(attributes.items())))
    declarations = []
    for kind, key, table in (("stage", "span", "declare"), ("reason", "name", "reason")):
        for i, item in enumerate(_items(data, table, path)):
            where = f"stage map {path}, {table} #{i + 1}"
            name, meaning = item.get(key, ""), item.get("meaning", "")
            try:
                check_name(name, "stage name" if kind == "stage" else "error reason")
            except ValueError as exc:
                raise StageMapError(f"{where}: {exc}") from None
            if not isinstance(meaning, str):
                raise StageMapError(f"{where}: meaning must be a string")
            declarations.append((kind, name, meaning))
    if not rows and not declarations:
        raise StageMapError(f"stage map {path}: no [[stage]], [[declare]] or [[reason]] rows")
    return StageSource(path, tuple(rows), tuple(declarations))


def _items(data: dict[str, Any], table: str, path: str) -> list[dict[str, Any]]:
    items = data.get(table, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise StageMapError(f"stage map {path}: {table} must be [[{table}]] tables")
    return items
