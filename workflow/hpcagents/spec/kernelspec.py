"""Kernel specs: ``kernels/<name>/kernel.yaml``, the kernel's contract as data.

What the agents are told (title, description, signature, constraints) and what the generic
judge needs (the parameters in signature order, the reference, the tolerance model, the
flops/bytes expressions, the validation cases and the bench case). Adding a kernel is adding
a folder; nothing in the code names dgemm. The format is documented in kernels/README.md.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcagents.core.artifacts import REPO_DIR, ArtifactError, validate


class KernelError(ValueError):
    """A kernel that does not exist or whose kernel.yaml is malformed (message names it)."""


#: Every blank of a folder drafted by ``hpcagents new-kernel`` starts with this marker; the
#: rest of the string says what to write.
BLANK = "FILL_ME"


class BlanksError(KernelError):
    """A kernel.yaml still holds ``FILL_ME`` blanks; ``blanks`` lists (key path, what)."""

    def __init__(self, message: str, blanks: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.blanks = blanks


# element type -> (C type, numpy dtype name)
ELEMENT_TYPES = {
    "double": ("double", "float64"),
    "float": ("float", "float32"),
    "int": ("int", "int32"),
    "int64": ("int64_t", "int64"),
}
_C_ELEMENT = {
    "double": "double",
    "float": "float",
    "int": "int",
    "int32_t": "int",
    "int64_t": "int64",
    "long": "int64",
    "long int": "int64",
    "long long": "int64",
    "long long int": "int64",
}
_C_INTEGER = {
    "int",
    "int32_t",
    "int64_t",
    "long",
    "long int",
    "long long",
    "long long int",
    "size_t",
    "ptrdiff_t",
    "unsigned",
    "unsigned int",
    "unsigned long",
}
GENERATORS = ("uniform", "uniform_positive", "constant", "spd", "csr")
CSR_PARTS = ("row_ptr", "col_idx", "values")


@dataclass(frozen=True)
class Param:
    """One parameter of the kernel's function, in signature order."""

    name: str
    kind: str  # size | scalar | array | ld
    ctype: str  # the C type as written in the signature (normalised), e.g. "const double *"
    type: str | None = None  # element/scalar type: double | float | int | int64
    intent: str | None = None  # in | out | inout (arrays)
    shape: tuple[str, ...] = ()  # extents as expressions (arrays)
    ld: str | None = None  # the ld parameter of this array's last extent
    halo: int = 0  # cells on each side of every extent that are not part of the output
    poison_when: str | None = None  # the array is NaN on entry when this holds
    # the elements of the output the kernel may write, as a predicate over the indices
    # (i, j, ...), e.g. "j <= i" for a lower triangle; the others must stay bit for bit
    writes: str | None = None
    generator: dict[str, Any] = field(default_factory=lambda: {"kind": "uniform"})


@dataclass(frozen=True)
class Case:
    """One case: the values of the size and scalar parameters, plus ``pad`` (extra ld)."""

    values: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def pad(self) -> int:
        return int(self.values.get("pad", 0))

    def label(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Reference:
    """A library routine behind a trusted adapter, or a reference C file (user code)."""

    file: str  # the C file beside kernel.yaml defining the kernel's function
    library: str | None  # "blas" or None
    describe: str


@dataclass(frozen=True)
class Tolerance:
    model: str  # error_bound | relative
    factor: float = 4.0
    terms: str = "1"
    rtol: float = 0.0
    atol: float = 0.0


@dataclass(frozen=True)
class KernelSpec:
    name: str
    title: str
    description: str
    function: str
    signature: str
    source: str
    constraints: tuple[str, ...]
    parameters: tuple[Param, ...]
    reference: Reference
    tolerance: Tolerance
    flops_expr: str
    bytes_expr: str
    sparse: dict[str, dict[str, Any]]
    cases: tuple[Case, ...]
    bench: Case
    fallback_strategies: tuple[dict[str, str], ...]
    directory: Path
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def param(self, name: str) -> Param:
        return next(p for p in self.parameters if p.name == name)

    def names(self, case: Case | Mapping[str, Any]) -> dict[str, float]:
        """Every name an expression may use for ``case``: sizes, scalars, lds, <matrix>_nnz."""
        values = case.values if isinstance(case, Case) else dict(case)
        out: dict[str, float] = {}
        for p in self.parameters:
            if p.kind in ("size", "scalar"):
                out[p.name] = values[p.name]
        for mname, m in self.sparse.items():
            rows = int(_safe_eval(str(m["rows"]), out))
            cols = int(_safe_eval(str(m["cols"]), out))
            out[f"{mname}_nnz"] = csr_nnz(rows, cols, float(_safe_eval(str(m["density"]), out)))
        pad = int(values.get("pad", 0))
        for p in self.parameters:
            if p.kind == "array" and p.ld:
                last = int(_safe_eval(p.shape[-1], out)) if p.shape else 1
                out[p.ld] = max(1, last) + pad
        return out

    def flops(self, case: Case | Mapping[str, Any]) -> float:
        return float(_safe_eval(self.flops_expr, self.names(case)))

    def bytes(self, case: Case | Mapping[str, Any]) -> float:
        return float(_safe_eval(self.bytes_expr, self.names(case)))

    def bench_case(self, size: int | None = None) -> Case:
        """The bench case, with every size parameter set to ``size`` when given."""
        if not size:
            return self.bench
        values = dict(self.bench.values)
        for p in self.parameters:
            if p.kind == "size":
                values[p.name] = int(size)
        return Case(values)


def csr_nnz(rows: int, cols: int, density: float) -> int:
    """Non-zeros of a generated CSR matrix: the same count on every row (at least 1 if any)."""
    if rows <= 0 or cols <= 0:
        return 0
    per_row = min(cols, max(1, round(density * cols)))
    return rows * per_row


_ALLOWED = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.And,
    ast.Or,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Call,
    ast.IfExp,
)
_FUNCTIONS = {"min": min, "max": max, "abs": abs}
_MAX_EXPONENT = 8


def check_expression(expr: str, names: set[str] | Mapping[str, Any]) -> ast.Expression:
    """Parse ``expr`` and refuse anything but arithmetic, comparison and min/max/abs."""
    try:
        tree = ast.parse(str(expr), mode="eval")
    except SyntaxError as exc:
        raise KernelError(f"expression {expr!r}: not valid arithmetic ({exc.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise KernelError(f"expression {expr!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Call):
            if (
                not isinstance(node.func, ast.Name)
                or node.func.id not in _FUNCTIONS
                or node.keywords
            ):
                raise KernelError(f"expression {expr!r}: only min, max and abs may be called")
        elif isinstance(node, ast.Name) and node.id not in names and node.id not in _FUNCTIONS:
            known = ", ".join(sorted(names))
            raise KernelError(f"expression {expr!r}: unknown name {node.id!r} (use {known})")
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
    return tree


def _safe_eval(expr: str, names: Mapping[str, Any]) -> float:
    """Arithmetic/comparison over the case's names and numbers only: kernel.yaml runs no code.

    Powers need a small constant exponent (``m**3``), so an expression cannot hang the
    evaluator with ``m**n**k`` either. Comparisons give 1.0 / 0.0.
    """
    tree = check_expression(expr, names)
    try:
        value = eval(  # noqa: S307 - the tree was checked node by node above
            compile(tree, "<kernel.yaml>", "eval"),
            {"__builtins__": {}, **_FUNCTIONS},
            dict(names),
        )
    except ArithmeticError as exc:
        raise KernelError(f"expression {expr!r} at {dict(names)}: {exc}") from None
    return float(value)


def evaluate_expression(expr: str, names: Mapping[str, Any]) -> float:
    """Public form of the safe evaluator (the judge uses it for shapes and poison_when)."""
    return _safe_eval(expr, names)


# --- the signature -----------------------------------------------------------------------


def parse_signature(signature: str) -> tuple[str, list[tuple[str, str]]]:
    """``void f(int m, const double *A)`` -> ("f", [("int", "m"), ("const double *", "A")])."""
    m = re.fullmatch(r"\s*void\s+([A-Za-z_]\w*)\s*\((.*)\)\s*;?\s*", signature, re.DOTALL)
    if not m:
        raise KernelError(
            f"key 'signature': {signature!r} is not 'void NAME(TYPE NAME, ...)' "
            "(the kernel returns void)"
        )
    params = []
    body = m.group(2).strip()
    if body in ("", "void"):
        return m.group(1), []
    for i, part in enumerate(body.split(","), 1):
        text = re.sub(r"\b(restrict|__restrict__|__restrict)\b", " ", part)
        pointer = text.count("*") + (1 if "[" in text else 0)
        text = re.sub(r"\[[^\]]*\]", " ", text).replace("*", " ")
        words = text.split()
        if len(words) < 2:
            raise KernelError(f"key 'signature': parameter {i} {part.strip()!r} has no name")
        name, words = words[-1], words[:-1]
        const = "const" in words
        base = " ".join(w for w in words if w not in ("const", "volatile"))
        ctype = ("const " if const else "") + base + (" " + "*" * pointer if pointer else "")
        params.append((ctype, name))
    return m.group(1), params


def _check_against_signature(params: list[Param], sig: list[tuple[str, str]], where: str) -> None:
    if len(params) != len(sig):
        raise KernelError(
            f"{where}: key 'parameters' lists {len(params)} parameters but the signature has "
            f"{len(sig)} ({', '.join(n for _, n in sig)})"
        )
    for i, (p, (ctype, name)) in enumerate(zip(params, sig, strict=True), 1):
        if p.name != name:
            raise KernelError(
                f"{where}: key 'parameters': parameter {i} is '{p.name}' but the signature's "
                f"parameter {i} is '{name}' (same names, same order)"
            )
        base = ctype.replace("const ", "").replace("*", "").strip()
        pointer = "*" in ctype
        if p.kind in ("size", "ld"):
            ok = not pointer and base in _C_INTEGER
            want = "an integer type"
        elif p.kind == "scalar":
            ok = not pointer and _C_ELEMENT.get(base) == p.type
            want = f"a {p.type} value"
        else:
            ok = ctype.count("*") == 1 and _C_ELEMENT.get(base) == p.type
            want = f"a pointer to {p.type}"
        if not ok:
            raise KernelError(
                f"{where}: key 'parameters': parameter {i} '{name}' ({p.kind}) needs {want} "
                f"but the signature has '{ctype} {name}'"
            )


def _generator(raw: Any, key: str) -> dict[str, Any]:
    gen = {"kind": raw} if isinstance(raw, str) else dict(raw or {"kind": "uniform"})
    if gen.get("kind") not in GENERATORS:
        raise KernelError(f"{key}: unknown generator {gen.get('kind')!r} (use {GENERATORS})")
    return gen


def _params(raw: dict[str, Any], where: str) -> list[Param]:
    out = []
    for i, p in enumerate(raw["parameters"]):
        key = f"{where}: key 'parameters.{i}' ({p['name']})"
        kind = p["kind"]
        if kind == "array":
            for need in ("type", "intent", "shape"):
                if need not in p:
                    raise KernelError(f"{key}: an array needs '{need}'")
        if kind == "scalar" and "type" not in p:
            raise KernelError(f"{key}: a scalar needs 'type'")
        out.append(
            Param(
                name=p["name"],
                kind=kind,
                ctype="",
                type=p.get("type"),
                intent=p.get("intent"),
                shape=tuple(str(s) for s in p.get("shape", ())),
                ld=p.get("ld"),
                halo=int(p.get("halo", 0)),
                poison_when=p.get("poison_when"),
                writes=p.get("writes"),
                generator=_generator(p.get("generator"), key),
            )
        )
    names = [p.name for p in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise KernelError(f"{where}: key 'parameters': {sorted(dup)} listed twice")
    lds = {p.name for p in out if p.kind == "ld"}
    used = [p.ld for p in out if p.ld]
    for p in out:
        if p.ld and p.ld not in lds:
            raise KernelError(
                f"{where}: key 'parameters' ({p.name}): ld '{p.ld}' is not a parameter of kind ld"
            )
        if p.kind == "ld" and used.count(p.name) != 1:
            raise KernelError(
                f"{where}: key 'parameters' ({p.name}): an ld parameter belongs to exactly one "
                f"array (found {used.count(p.name)})"
            )
        if p.ld and p.halo:
            raise KernelError(f"{where}: key 'parameters' ({p.name}): use either ld or halo")
    return out


#: The kernels that come with hpcagents (the search path's last entry).
BUILTIN_KERNELS = REPO_DIR / "kernels"


def kernel_search_path(kernels_dir: Path | str | Sequence[Path | str] | None) -> tuple[Path, ...]:
    """Where kernel folders are looked for, first match wins: the given folder(s) (a
    campaign's ``kernels_dir``: users keep their kernels outside this checkout), then the
    built-in ``kernels/``."""
    if kernels_dir is None:
        given: list[Path] = []
    elif isinstance(kernels_dir, (str, Path)):
        given = [Path(kernels_dir)]
    else:
        given = [Path(d) for d in kernels_dir]
    return tuple(dict.fromkeys([*given, BUILTIN_KERNELS]))


def known_kernels(search: Sequence[Path]) -> list[str]:
    return sorted({p.parent.name for d in search for p in d.glob("*/kernel.yaml")})


def find_kernel(name: str, kernels_dir: Path | str | Sequence[Path | str] | None = None) -> Path:
    """The folder of kernel ``name`` (``<dir>/<name>/`` with a kernel.yaml) on the search
    path; the error names every folder looked in and the kernels found there."""
    search = kernel_search_path(kernels_dir)
    where = " or ".join(str(d) for d in search)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
        raise KernelError(f"unknown kernel {name!r}: a kernel name is a folder name under {where}")
    for d in search:
        if (d / name / "kernel.yaml").is_file():
            return d / name
    known = known_kernels(search)
    raise KernelError(
        f"unknown kernel '{name}': no {name}/kernel.yaml in {where} "
        f"(known: {', '.join(known) or 'none'})"
    )


def load_kernel(
    name: str, kernels_dir: Path | str | Sequence[Path | str] | None = None
) -> KernelSpec:
    """Load and validate ``<name>/kernel.yaml`` (see :func:`find_kernel` for where it is
    looked for); every error names the key."""
    path = find_kernel(name, kernels_dir) / "kernel.yaml"
    try:  # libyaml's safe loader where present: a campaign of many kernels loads them all
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise KernelError(f"{where}: not valid YAML: {problem}") from None
    # A folder drafted by `hpcagents new-kernel` names each blank left to fill in, before
    # the schema complains about what a blank holds.
    if isinstance(raw, dict):
        check_blanks(raw, path)
    try:
        validate(raw, "kernel", what=str(path))
    except ArtifactError as exc:
        raise KernelError(str(exc)) from None
    return _build(raw, path, name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kernel_snapshot(
    name: str, kernels_dir: Path | str | Sequence[Path | str] | None = None
) -> dict[str, Any]:
    """Kernel ``name`` frozen for a run: its folder, its kernel.yaml as written (validated
    here, once) and the sha256 of kernel.yaml and of every file it names (the baseline
    source, the reference). The run's jobs build the spec from this record
    (:func:`spec_from_snapshot`), so an edit of the folder mid-run never changes them.
    The text, not a re-serialisation, is kept: key order is part of what the agents are
    shown (e.g. a case is named ``m=1 n=1 k=1``)."""
    folder = find_kernel(name, kernels_dir)
    text = (folder / "kernel.yaml").read_text()
    spec = load_kernel(name, kernels_dir)
    files = [spec.source] + ([spec.reference.file] if spec.reference.file else [])
    return {
        "directory": str(folder),
        "kernel_yaml": text,
        "sha256": {
            "kernel.yaml": hashlib.sha256(text.encode()).hexdigest(),
            **{f: _sha256(folder / f) for f in dict.fromkeys(files)},
        },
    }


def spec_from_snapshot(name: str, snapshot: Mapping[str, Any]) -> KernelSpec:
    """The kernel spec of a run's frozen record (no schema pass: it was validated when the
    run started). A file the spec names (the reference, the baseline) that changed since
    is an error naming it: the run's figures would no longer measure what it started
    with. (kernel.yaml itself is not read: the frozen text is used.)"""
    folder = Path(snapshot["directory"])
    for fname, digest in snapshot["sha256"].items():
        if fname == "kernel.yaml":
            continue
        path = folder / fname
        now = _sha256(path) if path.is_file() else "missing"
        if now != digest:
            raise KernelError(
                f"kernel {name}: {path} changed since this run started (sha256 "
                f"{digest[:12]} -> {now[:12]}): restart the campaign with `hpcagents run`, "
                "which names the change; then start a new results folder or rerun with "
                "--accept-changes"
            )
    raw = yaml.load(snapshot["kernel_yaml"], Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return _build(raw, folder / "kernel.yaml", name)


def _build(raw: dict[str, Any], path: Path, name: str) -> KernelSpec:
    where = str(path)
    ref_raw = raw["reference"]
    ref_file = ref_raw.get("adapter") or ref_raw.get("file")
    for key, file in (("source", raw["source"]), ("reference", ref_file)):
        if not (path.parent / file).is_file():
            raise KernelError(f"{where}: key '{key}': file {file} not found beside it")
    function, sig = parse_signature(raw["signature"])
    if function != raw["function"]:
        raise KernelError(
            f"{where}: key 'function' is '{raw['function']}' but the signature defines '{function}'"
        )
    params = _params(raw, where)
    _check_against_signature(params, sig, where)
    params = [
        Param(**{**p.__dict__, "ctype": ctype}) for p, (ctype, _) in zip(params, sig, strict=True)
    ]
    tol = raw["tolerance"]
    tolerance = Tolerance(
        model=tol["model"],
        factor=float(tol.get("factor", 4.0)),
        terms=str(tol.get("terms", "1")),
        rtol=float(tol.get("rtol", 0.0)),
        atol=float(tol.get("atol", 0.0)),
    )
    sparse = {k: dict(v) for k, v in (raw.get("sparse") or {}).items()}
    spec = KernelSpec(
        name=raw["name"],
        title=raw["title"],
        description=raw["description"],
        function=raw["function"],
        signature=raw["signature"],
        source=raw["source"],
        constraints=tuple(raw.get("constraints", [])),
        parameters=tuple(params),
        reference=Reference(
            file=ref_file,
            library=ref_raw.get("library"),
            describe=ref_raw.get("describe", ref_file),
        ),
        tolerance=tolerance,
        flops_expr=str(raw["flops"]),
        bytes_expr=str(raw["bytes"]),
        sparse=sparse,
        cases=tuple(Case(dict(c)) for c in raw["cases"]),
        bench=Case(dict(raw["bench"])),
        fallback_strategies=tuple(raw["fallback_strategies"]),
        directory=path.parent,
        raw=raw,
    )
    if spec.name != name:
        raise KernelError(f"{where}: key 'name' is '{spec.name}' but the folder is '{name}'")
    _check_sparse(spec, where)
    for i, case in enumerate(spec.cases):
        _check_case(spec, case, f"{where}: key 'cases.{i}'")
    _check_case(spec, spec.bench, f"{where}: key 'bench'")
    return spec


def _check_sparse(spec: KernelSpec, where: str) -> None:
    parts: dict[str, set[str]] = {m: set() for m in spec.sparse}
    for p in spec.parameters:
        if p.kind == "array" and p.generator["kind"] == "csr":
            m, part = p.generator.get("matrix"), p.generator.get("part")
            key = f"{where}: key 'parameters' ({p.name}): generator csr"
            if m not in spec.sparse:
                raise KernelError(f"{key}: matrix {m!r} is not defined under 'sparse'")
            if part not in CSR_PARTS:
                raise KernelError(f"{key}: part {part!r} must be one of {CSR_PARTS}")
            want = {"row_ptr": "int", "col_idx": "int", "values": None}[part]
            if want and p.type not in ("int", "int64"):
                raise KernelError(f"{key}: the {part} array must be int or int64")
            if p.intent != "in" or len(p.shape) != 1 or p.ld:
                raise KernelError(f"{key}: CSR arrays are 1-D inputs without ld")
            parts[m].add(part)
    for m, got in parts.items():
        if got != set(CSR_PARTS):
            raise KernelError(
                f"{where}: key 'sparse.{m}': arrays for {sorted(set(CSR_PARTS) - got)} missing "
                "(three arrays with generator {kind: csr, matrix: NAME, part: ...})"
            )


def _check_case(spec: KernelSpec, case: Case, key: str) -> None:
    wanted = {p.name for p in spec.parameters if p.kind in ("size", "scalar")}
    for k in case.values:
        if k not in wanted and k != "pad":
            raise KernelError(
                f"{key}: '{k}' is not a size or scalar parameter "
                f"(use {', '.join(sorted(wanted))} and pad)"
            )
    missing = wanted - set(case.values)
    if missing:
        raise KernelError(f"{key}: missing {', '.join(sorted(missing))}")
    for p in spec.parameters:
        v = case.values.get(p.name)
        if p.kind == "size" and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise KernelError(f"{key}: size '{p.name}' must be an integer >= 0, not {v!r}")
        if p.kind == "scalar" and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise KernelError(f"{key}: scalar '{p.name}' must be a number, not {v!r}")
        if p.kind == "scalar" and p.type in ("int", "int64") and not isinstance(v, int):
            raise KernelError(f"{key}: scalar '{p.name}' is an integer, not {v!r}")
    names = spec.names(case)
    for label, expr in (
        ("flops", spec.flops_expr),
        ("bytes", spec.bytes_expr),
        ("tolerance.terms", spec.tolerance.terms),
    ):
        try:
            _safe_eval(expr, names)
        except KernelError as exc:
            raise KernelError(f"{key}: key '{label}': {exc}") from None
    for p in spec.parameters:
        for label, expr in [(f"shape of {p.name}", e) for e in p.shape] + (
            [(f"poison_when of {p.name}", p.poison_when)] if p.poison_when else []
        ):
            try:
                value = _safe_eval(expr, names)
            except KernelError as exc:
                raise KernelError(f"{key}: key 'parameters' ({label}): {exc}") from None
            if label.startswith("shape") and (value < 0 or not math.isfinite(value)):
                raise KernelError(f"{key}: {label} is {value:g} (negative)")


# --- the blanks check --------------------------------------------------------------------


def _walk(value: Any, path: str, raw: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(value, str):
        if value.strip().startswith(BLANK):
            what = value.strip()[len(BLANK) :].lstrip(": ").strip()
            out.append((path, what or "a value"))
    elif isinstance(value, dict):
        for key, item in value.items():
            out += _walk(item, f"{path}.{key}" if path else str(key), raw)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            label = f"{path}.{i}"
            if path == "parameters" and isinstance(item, dict) and "name" in item:
                label += f" ({item['name']})"
            out += _walk(item, label, raw)
    return out


def find_blanks(raw: Any) -> list[tuple[str, str]]:
    """Every ``FILL_ME`` value in a parsed kernel.yaml: (key path, what to write)."""
    return _walk(raw, "", raw if isinstance(raw, dict) else {})


def check_blanks(raw: dict[str, Any], path: Path | str) -> None:
    """Refuse a kernel.yaml that still holds blanks, naming each one and what to write.

    Called before schema validation, so the user sees "fill in these" rather than a schema
    complaint about a string where a number belongs.
    """
    blanks = find_blanks(raw)
    if not blanks:
        return
    listing = "\n".join(f"  - {key}: {what}" for key, what in blanks)
    raise BlanksError(
        f"{path}: {len(blanks)} blank(s) left to fill in (values starting with {BLANK}, "
        f"written by hpcagents new-kernel); replace each with what it asks for:\n{listing}",
        blanks,
    )
