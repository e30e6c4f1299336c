"""The code's shape, read from its imports: no import cycle (counting imports inside functions,
which only defer one), and the pure layers (ids, spec compilation, rendering, parsing, search
rules, state classification, spend arithmetic, statistics, page building) import neither I/O
nor the modules that do it, so their tests need no files and no scheduler."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pipeline"

PURE = {
    "pipeline.errors", "pipeline.ids",
    "pipeline.design.render", "pipeline.design.structured", "pipeline.design.parsers",
    "pipeline.design.search", "pipeline.design.spec.compiler",
    "pipeline.store.state", "pipeline.store.spend",
    "pipeline.reports.stats", "pipeline.reports.tables",
    "pipeline.sitegen.pages", "pipeline.sitegen.diff", "pipeline.sitegen.figures",
    "pipeline.sitegen.render", "pipeline.sitegen.search",
}
# A pure module may take types and constants (capitalised names) from any module: they do no
# I/O. Functions it takes only from pure modules, and these pure helpers that live beside I/O.
PURE_HELPERS = {("pipeline.store", "csv_text"), ("pipeline.sitegen.data", "records")}
IO_LIBRARIES = {"luigi", "openai", "aiohttp", "fcntl", "subprocess", "socket", "shutil", "sqlite3", "http", "tempfile"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]):
    """(imported pipeline module, names taken from it) and the outside top-level packages."""
    inside, outside = [], set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pipeline"):
                    inside.append((alias.name, set()))
                else:
                    outside.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("pipeline"):
                outside.add(module.split(".")[0])
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                inside.append((sub, set()) if sub in mods else (module, {alias.name}))
    resolved = []
    for target, names in inside:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        # A module inside a package imports the package's __init__ anyway: not an edge.
        if target and target != name and not name.startswith(target + "."):
            resolved.append((target, names))
    return resolved, outside


def _graph():
    mods = _modules()
    return mods, {name: _imports(name, path, mods) for name, path in mods.items()}


def test_no_import_cycle():
    mods, graph = _graph()
    edges = {name: sorted({t for t, _ in graph[name][0]}) for name in mods}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycles.append(" → ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert not cycles, cycles


def test_pure_layers_import_no_io():
    mods, graph = _graph()
    assert PURE <= set(mods), sorted(PURE - set(mods))
    problems = []
    for name in sorted(PURE):
        inside, outside = graph[name]
        for lib in sorted(outside & IO_LIBRARIES):
            problems.append(f"{name} imports {lib}")
        for target, names in inside:
            if target in PURE:
                continue
            if names and all(n[0].isupper() or (target, n) in PURE_HELPERS for n in names):
                continue
            problems.append(f"{name} imports {target} {sorted(names) or ''}")
    assert not problems, problems


def test_the_checker_sees_a_cycle(tmp_path):
    """The cycle finder is only worth its pass if it finds a planted cycle."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pipeline.b import g\n")
    mods = {"pipeline.a": a, "pipeline.b": tmp_path / "b.py"}
    (tmp_path / "b.py").write_text("from pipeline.a import f\n")
    assert [t for t, _ in _imports("pipeline.a", a, mods)[0]] == ["pipeline.b"]
    assert [t for t, _ in _imports("pipeline.b", mods["pipeline.b"], mods)[0]] == ["pipeline.a"]
