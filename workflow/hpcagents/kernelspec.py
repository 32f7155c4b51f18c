"""Kernel specs: ``kernels/<name>/kernel.yaml``, what the agents are told and the harness needs.

Adding a kernel is adding a folder; nothing in the code names dgemm.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .artifacts import REPO_DIR, ArtifactError, validate


class KernelError(ValueError):
    """A kernel that does not exist or whose kernel.yaml is malformed (message names it)."""


@dataclass(frozen=True)
class Case:
    """One validation case: sizes, scalars and extra leading-dimension padding."""

    m: int
    n: int
    k: int
    alpha: float
    beta: float
    pad: int = 0

    def label(self) -> str:
        return (
            f"m={self.m} n={self.n} k={self.k} alpha={self.alpha:g} beta={self.beta:g} "
            f"pad={self.pad}"
        )


@dataclass(frozen=True)
class KernelSpec:
    name: str
    title: str
    description: str
    function: str
    signature: str
    source: str
    harness: str
    constraints: tuple[str, ...]
    reference: str
    flops_expr: str
    bytes_expr: str
    tolerance_factor: float
    cases: tuple[Case, ...]
    bench: Case
    fallback_strategies: tuple[dict[str, str], ...]
    directory: Path
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def flops(self, m: int, n: int, k: int) -> float:
        return float(_safe_eval(self.flops_expr, {"m": m, "n": n, "k": k}))

    def bytes(self, m: int, n: int, k: int) -> float:
        return float(_safe_eval(self.bytes_expr, {"m": m, "n": n, "k": k}))


_ALLOWED = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.Constant,
    ast.Name,
    ast.Load,
)
_MAX_EXPONENT = 8


def _safe_eval(expr: str, names: dict[str, int]) -> float:
    """Arithmetic over m, n, k and numbers only: a kernel.yaml cannot run code.

    Powers need a small constant exponent (``m**3``), so an expression cannot hang the
    evaluator with ``m**n**k`` either.
    """
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise KernelError(f"expression {expr!r}: not valid arithmetic ({exc.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise KernelError(f"expression {expr!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Name) and node.id not in names:
            raise KernelError(f"expression {expr!r}: unknown name {node.id!r} (use m, n, k)")
        if isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            raise KernelError(f"expression {expr!r}: constant {node.value!r} is not a number")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            exp = node.right
            if not (isinstance(exp, ast.Constant) and abs(exp.value) <= _MAX_EXPONENT):
                raise KernelError(
                    f"expression {expr!r}: exponents must be constants up to {_MAX_EXPONENT}"
                )
    try:
        value = eval(compile(tree, "<kernel.yaml>", "eval"), {"__builtins__": {}}, dict(names))
    except ArithmeticError as exc:
        raise KernelError(f"expression {expr!r} at {names}: {exc}") from None
    return float(value)


def load_kernel(name: str, kernels_dir: Path | None = None) -> KernelSpec:
    """Load and validate ``kernels/<name>/kernel.yaml``."""
    kernels_dir = Path(kernels_dir or REPO_DIR / "kernels")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
        raise KernelError(
            f"unknown kernel {name!r}: a kernel name is a folder name under {kernels_dir}"
        )
    path = kernels_dir / name / "kernel.yaml"
    if not path.is_file():
        known = sorted(p.parent.name for p in kernels_dir.glob("*/kernel.yaml"))
        raise KernelError(
            f"unknown kernel '{name}': no {path} (known: {', '.join(known) or 'none'})"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise KernelError(f"{path}: not valid YAML: {exc}") from None
    try:
        validate(raw, "kernel", what=str(path))
    except ArtifactError as exc:
        raise KernelError(str(exc)) from None
    for key in ("source", "harness"):
        if not (path.parent / raw[key]).is_file():
            raise KernelError(f"{path}: key '{key}': file {raw[key]} not found beside it")
    val = raw["validation"]
    spec = KernelSpec(
        name=raw["name"],
        title=raw["title"],
        description=raw["description"],
        function=raw["function"],
        signature=raw["signature"],
        source=raw["source"],
        harness=raw["harness"],
        constraints=tuple(raw.get("constraints", [])),
        reference=raw["reference"]["routine"],
        flops_expr=str(raw["flops"]),
        bytes_expr=str(raw["bytes"]),
        tolerance_factor=float(val["tolerance_factor"]),
        cases=tuple(Case(**c) for c in val["cases"]),
        bench=Case(**raw["bench"]),
        fallback_strategies=tuple(raw["fallback_strategies"]),
        directory=path.parent,
        raw=raw,
    )
    if spec.name != name:
        raise KernelError(f"{path}: key 'name' is '{spec.name}' but the folder is '{name}'")
    for key, fn in (("flops", spec.flops), ("bytes", spec.bytes)):
        try:
            fn(2, 3, 5)
        except KernelError as exc:
            raise KernelError(f"{path}: key '{key}': {exc}") from None
    return spec
