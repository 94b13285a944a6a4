#!/usr/bin/env python3
"""The import graph of the `advisor` package, read with `ast` (nothing is imported or run).

Every import counts, at module level and inside functions alike (a function-level import is a
dependency too; it only runs later). Prints, and exits 1 if there is any:

- import cycles among advisor's modules (strongly connected components of the graph);
- technique-to-technique imports inside `advisor/passes`: a technique module (one that
  registers a pass with `@register_pass`) must not import another technique module; what they
  share lives in helper modules (`onnx_common`, `torch_common`, ...).

`TYPE_CHECKING` blocks are skipped (they never run), and so is an import of a module's own
ancestor package (`from advisor import __version__` in `advisor.measure.profile`): Python runs
every ancestor's `__init__` before the module itself anyway, so such an import orders nothing
and cannot close a loop that the package's own imports did not already make. Usage: `python scripts/check_imports.py
[--root DIR] [--graph]`; `--graph` also prints every edge.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "advisor"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Module name -> file for every .py file of the package under `root`."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Names of the advisor modules `tree` imports (the longest known prefix of each target)."""
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            cand = ".".join(parts)
            if cand in known:
                return cand
            parts.pop()
        return None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                hit = resolve(alias.name)
                if hit:
                    found.add(hit)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from advisor.passes import kd_losses` names a module
                hit = resolve(f"{target}.{alias.name}") if alias.name != "*" else None
                hit = hit or resolve(target)
                if hit:
                    found.add(hit)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    parts = module.split(".")
    ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
    return found - ancestors - {module}


def registers_pass(tree: ast.AST) -> bool:
    """Whether a module defines a function decorated with `register_pass(...)`."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for d in node.decorator_list:
                f = d.func if isinstance(d, ast.Call) else d
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if name == "register_pass":
                    return True
    return False


def build_graph(root: Path) -> tuple[dict[str, set[str]], set[str]]:
    """(module -> advisor modules it imports, technique modules of advisor.passes)."""
    files = modules(root)
    known = set(files)
    graph: dict[str, set[str]] = {}
    techniques: set[str] = set()
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py", known)
        if name.startswith(f"{PACKAGE}.passes.") and registers_pass(tree):
            techniques.add(name)
    return graph, techniques


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(out)


def technique_imports(graph: dict[str, set[str]], techniques: set[str]) -> list[tuple[str, str]]:
    return sorted((a, b) for a in techniques for b in graph[a] if b in techniques)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the folder holding the advisor package (default: this repository)")
    ap.add_argument("--graph", action="store_true", help="print every edge too")
    args = ap.parse_args(argv)
    graph, techniques = build_graph(args.root)
    if args.graph:
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f"{a} -> {b}")
    found = cycles(graph)
    cross = technique_imports(graph, techniques)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports; "
          f"technique modules: {', '.join(sorted(m.rsplit('.', 1)[1] for m in techniques))}")
    for comp in found:
        print("cycle: " + " <-> ".join(comp))
    for a, b in cross:
        print(f"technique imports technique: {a} -> {b}")
    if not found and not cross:
        print("no import cycles, no technique-to-technique imports")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
