"""The package's layers point only inward, read from the source (AST), so imports inside
functions count too. No exceptions list: a new edge that breaks a rule fails here.

    core  <-  io  <-  evaluation, jobs (the batch-job engine)  <-  cli
    (the top-level modules, e.g. the library pipeline and the conditioner registry, sit above core and io)
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "betterdepth_cli"
HEAVY_OUTSIDE_CLI = ("typer", "rich", "click")

#: what each layer may not import (by package prefix)
FORBIDDEN = {
    "betterdepth_cli.core": ("betterdepth_cli.io", "betterdepth_cli.evaluation", "betterdepth_cli.cli",
                             "betterdepth_cli.jobs", "betterdepth_cli.depth_pipeline",
                             "betterdepth_cli.conditioner_registry", "training"),
    "betterdepth_cli.io": ("betterdepth_cli.evaluation", "betterdepth_cli.cli", "betterdepth_cli.jobs",
                           "betterdepth_cli.depth_pipeline", "betterdepth_cli.conditioner_registry", "training"),
    "betterdepth_cli.evaluation": ("betterdepth_cli.cli", "betterdepth_cli.jobs", "training"),
    "betterdepth_cli.jobs": ("betterdepth_cli.cli", "betterdepth_cli.evaluation", "training"),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_scanner_sees_imports_inside_functions(tmp_path):
    probe = PACKAGE / "core" / "_layer_probe_tmp.py"
    probe.write_text("def f():\n    from betterdepth_cli.io.images import read_image\n    from ..io import outputs\n")
    try:
        found = _imports(probe)
    finally:
        probe.unlink()
    assert {"betterdepth_cli.io.images", "betterdepth_cli.io.outputs"} <= found


def test_layers_point_only_inward():
    bad = []
    for module, imports in _graph().items():
        for layer, forbidden in FORBIDDEN.items():
            if _under(module, layer):
                bad += [f"{module} -> {imp}" for imp in sorted(imports) if any(_under(imp, f) for f in forbidden)]
    assert bad == []


def test_typer_and_rich_only_in_the_cli():
    bad = [f"{module} -> {imp}" for module, imports in _graph().items() if not _under(module, "betterdepth_cli.cli")
           for imp in imports if imp.split(".")[0] in HEAVY_OUTSIDE_CLI]
    assert bad == []


def test_io_has_no_import_cycles():
    graph = _graph()
    io = {m for m in graph if _under(m, "betterdepth_cli.io") and m != "betterdepth_cli.io"}
    edges = defaultdict(set)
    for m in io:
        edges[m] = {t for t in io if t != m and any(_under(i, t) for i in graph[m])}
    cycles = []

    def visit(node, stack):
        for nxt in sorted(edges[node]):
            if nxt in stack:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif len(stack) < len(io):
                visit(nxt, stack + [nxt])

    for m in sorted(io):
        visit(m, [m])
    assert cycles == []
