"""The model config loader (upstream reads its ``cosyvoice*.yaml`` with hyperpyyaml).

A released CosyVoice model directory names the classes it is built from in its config, e.g.
``llm: !new:cosyvoice.llm.llm.CosyVoice3LM`` followed by the constructor's arguments. This loader
understands that tag (import the class, call it with the mapping below it) and plain YAML, which
is all the demo's configs use; PyYAML does the parsing.
"""

from __future__ import annotations

import importlib
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    pass


def _new(loader: _Loader, suffix: str, node: yaml.Node) -> Any:
    module_name, _, class_name = suffix.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    kwargs = loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) else {}
    return cls(**kwargs)


_Loader.add_multi_constructor("!new:", _new)


def load_model_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # noqa: S506 - our own loader, a trusted file
