"""The package's import rules: no circle, no snakemake, the stand-in only where it belongs.

The same checks a newcomer runs by hand (``python -m hpcagents.devtools.imports``), plus
proof that the checker finds what it looks for in a package built to break each rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from hpcagents.devtools.imports import PACKAGE_DIR, layer_graph, problems, read_package


def test_the_package_has_no_import_circle_no_snakemake_and_no_stand_in_leak():
    assert problems(read_package()) == []


def test_layers_import_only_downwards():
    """core is imported by everyone and imports nothing of the package; the judge knows
    nothing of the models, the campaign or the views."""
    graph = layer_graph(read_package())
    assert graph["core"] == set()
    assert graph["judge"] <= {"core", "spec"}
    assert graph["spec"] <= {"core"}


@pytest.mark.parametrize("layer", ["judge", "llm"])
def test_a_layers_modules_share_public_names_only(layer):
    """A ``_name`` is its own module's business: no module of the judge (or of the
    models) imports one from another (or reaches one through a module it imported); what
    two modules share is public, with a docstring saying what it is for."""
    found = []
    for path in sorted((PACKAGE_DIR / layer).glob("*.py")):
        tree = ast.parse(path.read_text())
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hpcagents"):
                for alias in node.names:
                    imported.add(alias.asname or alias.name)
                    if alias.name.startswith("_"):
                        found.append(f"{path.name} imports {alias.name} from {node.module}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{path.name} uses {node.value.id}.{node.attr}")
    assert found == []


def _package(root: Path, modules: dict[str, str]) -> Path:
    pkg = root / "hpcagents"
    for name, text in modules.items():
        path = pkg / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == root:
                break
            (parent / "__init__.py").touch()
        path.write_text(text)
    return pkg


def test_the_checker_names_a_circle_hidden_in_a_function(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "spec.config": "def f():\n    from hpcagents.llm.probe import check\n",
            "llm.probe": "from hpcagents.spec.config import f\n",
        },
    )
    found = problems(read_package(pkg))
    assert "import circle between modules: hpcagents.llm.probe <-> hpcagents.spec.config" in (found)
    assert "import circle between subpackages: llm <-> spec" in found


def test_a_type_only_import_makes_no_circle(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "campaign.a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from hpcagents.campaign.b import B\n",
            "campaign.b": "from hpcagents.campaign.a import *\n",
        },
    )
    mods = read_package(pkg)
    assert problems(mods) == []
    assert mods["hpcagents.campaign.a"].type_only == {"hpcagents.campaign.b"}


def test_the_checker_names_snakemake_and_the_stand_in_imports(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "campaign.support": "def stop():\n    from snakemake.exceptions import WorkflowError\n",
            "views.status": "from hpcagents import scripted\n",
            "scripted": "",
            "cli": "def serve():\n    from hpcagents.scripted import main\n",
        },
    )
    assert sorted(problems(read_package(pkg))) == [
        "hpcagents.campaign.support imports snakemake (the package must run without it)",
        "hpcagents.views.status imports the scripted model (only its own command may)",
    ]


def test_building_the_cli_parser_loads_neither_the_stand_in_nor_snakemake():
    """Every Snakemake job is a ``python -m hpcagents <step>``: its parser must not load
    the scripted model (a stand-in for an LLM) or Snakemake."""
    code = (
        "import sys\nfrom hpcagents.cli import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'snakemake' or m == 'hpcagents.scripted'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_import_report_runs_and_says_no_circle():
    out = subprocess.run(
        [sys.executable, "-m", "hpcagents.devtools.imports"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "largest module: hpcagents." in out.stdout
    assert "modules importing snakemake: 0" in out.stdout
    assert out.stdout.rstrip().endswith("no import circle")
