"""The package's floor plan (docs/architecture.md), checked on the source: each folder imports only the folders below
it, no module imports itself back through others, argparse lives only in rlaif/cli/."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlaif"

# Bottom to top. "core" is the shared modules directly in rlaif/ (records, errors, resources, models). The client of
# the service sits just above it (it runs on training machines: no engine, no server code); the service between
# train and cli.
LAYERS = ["core", "client", "config", "backends", "judging", "store", "stages", "audit", "train", "service", "cli"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every rlaif module a file imports, at any depth (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rlaif"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rlaif"):
            assert node.module is not None
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
            found.update(subs or {node.module})
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "core"


def test_every_folder_has_a_place_in_the_layers():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), f"folders missing from the layer list: {sorted(folders - set(LAYERS))}"
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 6, f"rlaif/ should keep only small shared modules, found {top}"


def test_a_folder_imports_only_the_folders_below_it():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        if name == "rlaif":
            continue  # the package's lazy public API names things from every layer
        here = LAYERS.index(_layer(name))
        for target in _imports(path, modules):
            if target != "rlaif" and LAYERS.index(_layer(target)) > here:
                upward.append(f"{name} -> {target}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    modules = _modules()
    graph = {name: {t for t in _imports(path, modules) if t in modules and t != name} for name, path in modules.items()
             if name != "rlaif"}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a package's __init__ re-exporting its own submodules
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_argparse_lives_only_in_the_cli():
    modules = _modules()
    outside = [name for name, path in modules.items() if _layer(name) != "cli" and name != "rlaif"
               and any(isinstance(n, (ast.Import, ast.ImportFrom)) and "argparse" in ast.dump(n)
                       for n in ast.walk(ast.parse(path.read_text())))]
    assert not outside, f"argparse imported outside rlaif/cli/: {outside}"


def test_the_checks_see_an_upward_import(tmp_path):
    """The layer check is not vacuous: a store module importing a stage is caught."""
    assert _layer("rlaif.store.rows") == "store" and _layer("rlaif.stages.label") == "stages"
    assert _layer("rlaif.records") == "core"
    source = tmp_path / "x.py"
    source.write_text("from rlaif.stages.label import label_stage\nfrom rlaif.stages import label\n")
    assert _imports(source, _modules()) == {"rlaif.stages.label"}
    assert LAYERS.index("stages") > LAYERS.index("store")


def _sizes() -> tuple[list[str], list[str]]:
    """Classes over 150 lines and functions over 80 lines in rlaif/ (decorators excluded, docstrings included)."""
    classes, functions = [], []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            length = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "end_lineno") else 0
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'name', '')} ({length} lines)"
            if isinstance(node, ast.ClassDef) and length > 150:
                classes.append(where)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and length > 80:
                functions.append(where)
    return classes, functions


def test_no_class_over_150_lines_and_no_function_over_80():
    classes, functions = _sizes()
    assert not classes, "classes over 150 lines:\n" + "\n".join(classes)
    assert not functions, "functions over 80 lines:\n" + "\n".join(functions)


def test_the_size_check_sees_a_long_function(tmp_path, monkeypatch):
    """Not vacuous: a package with an 81-line function and a 151-line class is caught."""
    fake = tmp_path / "rlaif"
    fake.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    (fake / "big.py").write_text(f"def long():\n{body}\n\n\nclass Big:\n" + "\n".join(f"    y{i} = {i}" for i in range(150)) + "\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    classes, functions = _sizes()
    assert len(classes) == 1 and "Big" in classes[0] and len(functions) == 1 and "long" in functions[0]

