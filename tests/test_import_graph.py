"""fedtiny and clients form a DAG of modules: no import cycle among them.

The graph is read from the source with ``ast`` (nothing is imported). It counts every import at module level,
including those under ``if TYPE_CHECKING:`` (a cycle there is still two modules that need each other, and
the way around it, a Protocol or a smaller shared module, is the fix); imports inside functions are left
out: they are the deliberate lazy imports (TensorFlow, Flower, optional parts) and run after both modules
are loaded. ``from package import name`` counts as an import of ``package.name`` when that is a module,
else of ``package``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fedtiny",)
#: cycles another change removes; each entry must go when that lands (the test then says it is gone)
KNOWN: set[frozenset[str]] = set()


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run at import: the module body and the bodies of its top-level if/try/with blocks."""
    todo, out = list(tree.body), []
    while todo:
        node = todo.pop(0)
        out.append(node)
        if isinstance(node, (ast.If, ast.With)):
            todo += node.body + getattr(node, "orelse", [])
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The fedtiny/clients modules ``name`` (at ``path``) imports at module level."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in _module_level(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:  # `import a.b.c` needs a.b.c (and its packages, not counted here)
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_is_read() -> None:
    g = graph()
    assert "fedtiny.server.fleet_model" in g["fedtiny.server.fleet_server"]
    assert "fedtiny.clients.board.flash" in g["fedtiny.clients.board.device"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_fedtiny_and_clients_modules() -> None:
    found = {frozenset(c) for c in cycles(graph())}
    assert not found - KNOWN, [sorted(c) for c in found - KNOWN]
    assert not KNOWN - found, f"fixed, remove from KNOWN: {[sorted(c) for c in KNOWN - found]}"
