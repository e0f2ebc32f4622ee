"""fedtiny's packages form layers (docs/design.md, "Layers"): a module imports only modules of its own package
and of lower layers, at module level, inside functions and under ``TYPE_CHECKING`` alike, with no exception;
and below the plan no module sees the ``Scenario`` type (each stage takes its typed part of the plan).

The layer table is read from docs/design.md, so the document and the test cannot disagree.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"


def layer_table() -> dict[str, int]:
    """Unit (``fedtiny.X``, or ``fedtiny`` for the package root) → its layer number, from docs/design.md."""
    text = DESIGN.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    out: dict[str, int] = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for unit in re.findall(r"`([a-z_.]+)`", m.group(2)):
                out[unit] = int(m.group(1))
    return out


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "fedtiny").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def unit_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "fedtiny"
    if (ROOT / "fedtiny" / parts[1]).is_dir():
        return f"fedtiny.{parts[1]}"
    return module if len(parts) == 2 else ".".join(parts[:2])


def all_imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, list[str]]]:
    """(imported fedtiny module, line, names imported from it) for every import anywhere in the module."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            names = [a.name for a in node.names]
            targets = [(f"{base}.{n}", []) if f"{base}.{n}" in known else (base, [n]) for n in names]
        else:
            continue
        for t, imported in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.append((t, node.lineno, imported))
    return out


def test_the_layer_table_names_every_package_and_module() -> None:
    table = layer_table()
    units = {unit_of(m) for m in modules()}
    assert not units - set(table), (
        f"units missing from docs/design.md's layer table: {sorted(units - set(table))}"
    )
    assert not set(table) - units, f"the layer table names what does not exist: {sorted(set(table) - units)}"


def test_every_import_goes_down_the_layers() -> None:
    table, mods = layer_table(), modules()
    wrong = []
    for name, path in mods.items():
        mine = unit_of(name)
        for target, line, _ in all_imports(name, path, set(mods)):
            theirs = unit_of(target)
            if theirs != mine and table[theirs] >= table[mine]:
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line}: {mine} (layer {table[mine]}) imports {target} "
                    f"({theirs}, layer {table[theirs]})"
                )
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


def test_below_the_plan_no_module_sees_the_scenario() -> None:
    table, mods = layer_table(), modules()
    wrong = []
    for name, path in mods.items():
        if table[unit_of(name)] >= table["fedtiny.plan"]:
            continue
        for target, line, imported in all_imports(name, path, set(mods)):
            if (
                target.startswith("fedtiny.config")
                and "Scenario" in imported
                and name.split(".")[:2]
                != [
                    "fedtiny",
                    "config",
                ]
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} imports Scenario")
    assert not wrong, "\n".join(wrong)
