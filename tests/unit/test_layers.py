"""The package's floors only look down, and its imports have no loop.

From the ground up: the settings table, the schema and the other plain-data modules; then
``instrumentation/`` and ``sdk/``, two rooms on one floor that never import each other (what
both touch, the tracing-errors counter and the SIGTERM drains, is on the ground floor), and
import neither ``tools/`` nor the launcher; then
``tools/``; then ``launcher/``; the package's ``__init__`` is its public face, on top (it
re-exports the stage API lazily). ``from package import module`` depends on the module, not
on the package's ``__init__``. Read from the source (every ``import`` and ``from ...
import``, top-level or inside a function: a lazy import is still a dependency; only imports
under ``if TYPE_CHECKING:``, which never run, are left out)."""

from __future__ import annotations

import ast
from pathlib import Path

from ..support.helpers import ROOT

PACKAGE = ROOT / "cosyvoice_otel"
FLOORS = {"instrumentation": 1, "sdk": 1, "tools": 2, "launcher": 3, "__main__": 4}
FACADE = "cosyvoice_otel"  # the package's __init__: the public face
ROOMS = ("instrumentation", "sdk")  # floor 1: what gets traced | what happens to spans


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (a name imported from a package counts as
    its submodule when there is one)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING"
                       for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
                # ``from pkg import module`` needs the module; ``from pkg import name`` the pkg
                found.update(submodules)
                if len(submodules) < len(node.names):
                    found.add(base)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def floor(module: str) -> int:
    if module == FACADE:
        return 5
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def across_rooms(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                  if room(a) and room(b) and room(a) != room(b))


def test_the_two_rooms_never_import_each_other() -> None:
    """Lazy imports inside functions count: a violation hidden in a function is still one."""
    assert across_rooms(imports()) == []


def test_no_module_imports_a_higher_floor() -> None:
    upward = sorted(f"{a} -> {b}" for a, deps in imports().items() for b in deps
                    if floor(b) > floor(a))
    assert upward == []


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (depth-first search). A module importing its own package (``from pkg
    import sibling`` names ``pkg`` too) is not a loop through the package."""
    edges = {a: {b for b in deps if not a.startswith(b + ".")} for a, deps in graph.items()}
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return found


def test_the_imports_have_no_loop() -> None:
    assert loops(imports()) == []


def test_the_loop_finder_finds_one() -> None:
    assert loops({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}) == [
        ["p.a", "p.b", "p.c", "p.a"]]
    assert loops({"p": {"p.a"}, "p.a": {"p"}}) == []  # p.a names its package: no loop
    assert loops({"p.a": {"p.b"}, "p.b": {"p.a"}, "p": {"p.a"}}) == [["p.a", "p.b", "p.a"]]


def test_the_ground_floor_imports_nothing_above_it() -> None:
    graph = imports()
    ground = [m for m in graph if floor(m) == 0]
    assert {"cosyvoice_otel.settings", "cosyvoice_otel.schema", "cosyvoice_otel.masking",
            "cosyvoice_otel.stage_rows"} <= set(ground)
    for module in ground:
        assert all(floor(dep) == 0 for dep in graph[module]), (module, graph[module])


def test_the_layer_rule_would_see_a_violation(tmp_path, monkeypatch) -> None:
    """The checker itself can fail: an sdk module importing the launcher is caught."""
    fake = tmp_path / "cosyvoice_otel"
    (fake / "sdk").mkdir(parents=True)
    (fake / "launcher").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "sdk" / "__init__.py").write_text("")
    (fake / "launcher" / "__init__.py").write_text("")
    (fake / "launcher" / "cli.py").write_text("from cosyvoice_otel.sdk import x\n")
    (fake / "sdk" / "x.py").write_text("def f():\n    from cosyvoice_otel.launcher import cli\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "PACKAGE", fake)
    assert any(b == "cosyvoice_otel.launcher.cli" for deps in imports().values() for b in deps)
    graph = imports()
    assert floor("cosyvoice_otel.launcher.cli") > floor("cosyvoice_otel.sdk.x")
    assert "cosyvoice_otel.launcher.cli" in graph["cosyvoice_otel.sdk.x"]


def test_the_room_rule_would_see_a_lazy_import_across(tmp_path, monkeypatch) -> None:
    """The checker itself can fail: sdk/ importing instrumentation/ inside a function."""
    fake = tmp_path / "cosyvoice_otel"
    for folder in ("sdk", "instrumentation"):
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "instrumentation" / "gpu.py").write_text("TIMER = None\n")
    (fake / "sdk" / "life.py").write_text(
        "def drain():\n    from cosyvoice_otel.instrumentation.gpu import TIMER\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "PACKAGE", fake)
    assert across_rooms(imports()) == [
        "cosyvoice_otel.sdk.life -> cosyvoice_otel.instrumentation.gpu"]
