"""The package's architecture as its imports show it, for a newcomer and for a test.

    python -m hpcagents.devtools.imports          # tree, largest module, layer graph, checks
    python -m hpcagents.devtools.imports --modules  # and every module's own imports

Read from the source with :mod:`ast` (nothing is imported): every ``import`` of the
package counts, at module level or inside a function, because a lazy import hides a
circle without removing it. Imports under ``if TYPE_CHECKING:`` run nowhere; they are
listed apart (``type-only``) and make no circle.

It prints the tree of subpackages with line counts, the largest module, the graph
between subpackages (a top-level module such as ``cli`` is a node of its own), and then
checks what the project's rules say and exits 1 when one is broken:

* no import circle, between modules or between subpackages;
* the package never imports snakemake (the rules import the package, not the reverse);
* the scripted model (a stand-in for an LLM) is imported by no module of the package
  but the CLI's own command for it (the tests import it directly).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
NAME = "hpcagents"
STAND_IN = f"{NAME}.scripted"
#: the one module allowed to import the stand-in (inside its ``scripted-model`` command)
STAND_IN_IMPORTERS = frozenset({f"{NAME}.cli"})


@dataclass
class Module:
    """One module of the package: its dotted name, size and what it imports."""

    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # modules of the package
    type_only: set[str] = field(default_factory=set)  # under ``if TYPE_CHECKING:``
    external: set[str] = field(default_factory=set)  # top-level names outside it

    @property
    def layer(self) -> str:
        """``judge`` for ``hpcagents.judge.evaluate``; ``cli`` for ``hpcagents.cli``."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else NAME


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(base: str, names: Iterable[str], known: set[str]) -> set[str]:
    """``from base import a, b``: the submodules a, b where they are modules, else base."""
    out = set()
    for n in names:
        full = f"{base}.{n}"
        out.add(full if full in known else base)
    return out


def read_package(package_dir: Path = PACKAGE_DIR) -> dict[str, Module]:
    """Every module of the package with its imports, read from the source."""
    paths = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    mods = {
        module_name(p, package_dir): Module(
            module_name(p, package_dir), p, len(p.read_text().splitlines())
        )
        for p in paths
    }
    known = set(mods)
    for mod in mods.values():
        tree = ast.parse(mod.path.read_text(), str(mod.path))
        is_pkg = mod.path.name == "__init__.py"
        here = mod.name if is_pkg else mod.name.rpartition(".")[0]
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body
            for n in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only and isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                mod.type_only |= {n for n in names if n.startswith(NAME + ".")}
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == NAME or alias.name.startswith(NAME + "."):
                        mod.imports.add(alias.name)
                    else:
                        mod.external.add(alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                if base == NAME or base.startswith(NAME + "."):
                    mod.imports |= _resolve(base, (a.name for a in node.names), known)
                else:
                    mod.external.add(base.split(".")[0])
        mod.imports.discard(mod.name)
        mod.imports = {i for i in mod.imports if i in known}
    return mods


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def layer_graph(mods: dict[str, Module]) -> dict[str, set[str]]:
    """Subpackage -> the subpackages it imports (a top-level module is a layer too)."""
    graph: dict[str, set[str]] = {m.layer: set() for m in mods.values()}
    for m in mods.values():
        for i in m.imports:
            if mods[i].layer != m.layer and mods[i].name != NAME:
                graph[m.layer].add(mods[i].layer)
    graph.pop(NAME, None)
    return graph


def problems(mods: dict[str, Module]) -> list[str]:
    """What breaks the project's import rules, in words (empty: nothing)."""
    out = []
    for comp in cycles({n: m.imports for n, m in mods.items()}):
        out.append("import circle between modules: " + " <-> ".join(comp))
    for comp in cycles(layer_graph(mods)):
        out.append("import circle between subpackages: " + " <-> ".join(comp))
    for m in mods.values():
        if "snakemake" in m.external:
            out.append(f"{m.name} imports snakemake (the package must run without it)")
        if STAND_IN in m.imports and m.name not in STAND_IN_IMPORTERS:
            out.append(f"{m.name} imports the scripted model (only its own command may)")
    return out


def tree_text(mods: dict[str, Module]) -> str:
    """The package as folders with line counts, largest module first in each."""
    by_layer: dict[str, list[Module]] = {}
    for m in mods.values():
        by_layer.setdefault(m.layer, []).append(m)
    rows = []
    total = sum(m.lines for m in mods.values())
    rows.append(f"{NAME}/  {len(mods)} modules, {total} lines")
    top = sorted(by_layer.pop(NAME, []), key=lambda m: -m.lines)
    for layer in sorted(by_layer, key=lambda k: (len(by_layer[k]) == 1, k)):
        ms = by_layer[layer]
        if len(ms) == 1 and ms[0].path.name != "__init__.py":
            top.append(ms[0])
            continue
        rows.append(f"  {layer}/  {len(ms)} modules, {sum(m.lines for m in ms)} lines")
        for m in sorted(ms, key=lambda m: -m.lines):
            rows.append(f"    {m.path.name:<24}{m.lines:>6}")
    for m in sorted(top, key=lambda m: -m.lines):
        rows.append(f"  {m.path.name:<26}{m.lines:>6}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcagents.devtools.imports")
    parser.add_argument("--modules", action="store_true", help="every module's imports too")
    args = parser.parse_args(argv)
    mods = read_package()
    print(tree_text(mods))
    largest = max(mods.values(), key=lambda m: m.lines)
    print(f"\nlargest module: {largest.name} ({largest.lines} lines)")
    print("\nsubpackage -> what it imports:")
    for layer, deps in sorted(layer_graph(mods).items()):
        print(f"  {layer:<10} -> {', '.join(sorted(deps)) or '-'}")
    if args.modules:
        print("\nmodule -> what it imports:")
        for name, m in sorted(mods.items()):
            short = sorted(i.removeprefix(NAME + ".") for i in m.imports)
            typed = sorted(i.removeprefix(NAME + ".") for i in m.type_only)
            note = f"  (type-only: {', '.join(typed)})" if typed else ""
            print(f"  {name.removeprefix(NAME + '.'):<28} -> {', '.join(short) or '-'}{note}")
    found = problems(mods)
    importers = sorted(n for n, m in mods.items() if STAND_IN in m.imports)
    snake = sorted(n for n, m in mods.items() if "snakemake" in m.external)
    print(f"\nmodules importing snakemake: {len(snake)} {snake or ''}".rstrip())
    print(f"modules importing the scripted model: {len(importers)} {importers or ''}".rstrip())
    if found:
        print("\nPROBLEMS:")
        for p in found:
            print(f"  {p}")
        return 1
    print("no import circle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
