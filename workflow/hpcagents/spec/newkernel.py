"""``hpcagents new-kernel``: a kernel folder started from a user's own C function.

Users bring confidential code, not dgemm. This module turns one C function into a kernel
folder the judge can use once a person has said what the code cannot tell: the prototype is
parsed into parameters (integers are sizes, floating values scalars, ``const`` pointers
input arrays, other pointers arrays the function writes), the user's file becomes both the
baseline the agents edit (``<NAME>.c``) and the reference the judge trusts
(``original.c``), and everything else — array shapes, whether a written array is also
read, case sizes, tolerance, flops and bytes — is left as a marked blank.

A blank is a string starting with ``FILL_ME:`` followed by what to write there. Blanks are
values, not comments, so they cannot be overlooked: the kernel loader's
:func:`~hpcagents.spec.kernelspec.check_blanks` (called before schema validation) refuses
a kernel.yaml while any is left, naming each by its key path.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from hpcagents.spec.kernelspec import BLANK, KernelError

# C scalar types the prototype may use -> what they are for the judge.
_INTEGER_TYPES = {
    "int": "int",
    "signed": "int",
    "signed int": "int",
    "long": "int64",
    "long int": "int64",
    "signed long": "int64",
    "long long": "int64",
    "long long int": "int64",
    "size_t": "int64",
    "ptrdiff_t": "int64",
    "int32_t": "int",
    "int64_t": "int64",
}
_FLOAT_TYPES = {"double": "double", "float": "float"}
_QUALIFIERS = {"const", "restrict", "__restrict", "__restrict__", "volatile", "register"}
_ELEMENT_BYTES = {"double": 8, "float": 4, "int": 4, "int64": 8}


class PrototypeError(KernelError):
    """The C function cannot be turned into a kernel; the message says what to change."""


@dataclass(frozen=True)
class CParam:
    """One parameter of the prototype, as the judge needs it."""

    name: str
    declared: str  # normalised declaration: "const double *restrict x", "int n"
    base: str  # the C base type, normalised: "double", "long", "size_t"
    element: str  # the judge's type: double | float | int | int64
    pointer: bool
    const: bool  # const pointee (pointers only)

    @property
    def kind(self) -> str:
        if self.pointer:
            return "array"
        return "size" if self.element in ("int", "int64") else "scalar"


@dataclass(frozen=True)
class Prototype:
    function: str
    params: tuple[CParam, ...]

    @property
    def signature(self) -> str:
        return f"void {self.function}({', '.join(p.declared for p in self.params)})"


# --- reading the C file ------------------------------------------------------------------


def strip_comments(code: str) -> str:
    """Comments become spaces (newlines kept, so line numbers hold); strings are kept."""
    pattern = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)

    def repl(m: re.Match[str]) -> str:
        text = m.group(0)
        if text.startswith("/"):
            return " " if "\n" not in text else "\n" * text.count("\n")
        return text

    return pattern.sub(repl, code)


def _without_preprocessor(code: str) -> str:
    """Directive lines (with their continuations) blanked, so a macro is not a prototype."""
    out, continued = [], False
    for line in code.split("\n"):
        directive = continued or line.lstrip().startswith("#")
        continued = directive and line.rstrip().endswith("\\")
        out.append("" if directive else line)
    return "\n".join(out)


def _depth_zero_mask(code: str) -> list[int]:
    """Brace depth at every character (0 = file scope)."""
    depth, out = 0, []
    for ch in code:
        if ch == "{":
            out.append(depth)
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
            out.append(depth)
        else:
            out.append(depth)
    return out


def _closing_paren(code: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(code)):
        if code[i] == "(":
            depth += 1
        elif code[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _definitions(code: str) -> list[tuple[str, str, str, int]]:
    """File-scope function definitions: (return part, name, parameter text, line)."""
    depth = _depth_zero_mask(code)
    found = []
    for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", code):
        start = m.start()
        if depth[start] != 0:
            continue
        close = _closing_paren(code, m.end() - 1)
        if close < 0:
            continue
        after = code[close + 1 :].lstrip()
        if not after.startswith("{"):
            continue
        # the declaration specifiers run back to the previous ; } or start of file
        head_start = max(code.rfind(";", 0, start), code.rfind("}", 0, start)) + 1
        head = code[head_start:start].strip()
        if not head or head.endswith(("=", ",", "(")):
            continue
        found.append((head, m.group(1), code[m.end() : close], code.count("\n", 0, start) + 1))
    return found


def _parse_param(text: str, index: int, function: str) -> CParam:
    where = f"{function}: parameter {index}"
    raw = " ".join(text.split())
    if not raw:
        raise PrototypeError(f"{where} is empty")
    if raw == "...":
        raise PrototypeError(f"{where}: a variadic function (...) cannot be a kernel")
    if "(" in raw:
        raise PrototypeError(
            f"{where} '{raw}': function pointers are not supported; pass the data instead"
        )
    # arrays in parameter position are pointers: double a[], double a[restrict n]
    brackets = re.findall(r"\[([^\]]*)\]", raw)
    if len(brackets) > 1:
        raise PrototypeError(
            f"{where} '{raw}': multi-dimensional array parameters are not supported; "
            "pass a flat pointer (double *a) and index it by hand"
        )
    body = re.sub(r"\[[^\]]*\]", " ", raw)
    stars = body.count("*") + len(brackets)
    words = body.replace("*", " * ").split()
    type_words = set(_QUALIFIERS) | {"unsigned", "signed", "char", "short", "void"}
    type_words |= {w for t in (*_INTEGER_TYPES, *_FLOAT_TYPES) for w in t.split()}
    last = words[-1] if words else ""
    if not re.fullmatch(r"[A-Za-z_]\w*", last) or last in type_words or len(words) < 2:
        raise PrototypeError(f"{where} '{raw}' has no name; name every parameter")
    name = words[-1]
    if stars > 1:
        raise PrototypeError(
            f"{where} '{raw}': pointers to pointers are not supported; pass one flat array"
        )
    # a const before the * qualifies the pointee; after it, only the pointer itself
    star_at = words.index("*") if "*" in words else len(words) - 1
    const = "const" in words[:star_at]
    base_words = [w for w in words[:-1] if w != "*" and w not in _QUALIFIERS]
    base = " ".join(base_words)
    if base in ("unsigned", "unsigned int", "unsigned long", "unsigned long long"):
        raise PrototypeError(
            f"{where} '{raw}': unsigned integers are not supported (a size of 0 minus 1 "
            "wraps around); use int, long or size_t"
        )
    if base in _FLOAT_TYPES:
        element = _FLOAT_TYPES[base]
    elif base in _INTEGER_TYPES:
        element = _INTEGER_TYPES[base]
    else:
        raise PrototypeError(
            f"{where} '{raw}': type '{base or '?'}' is not supported; a kernel parameter is "
            "int, long, size_t, float or double, or a pointer to one of them (structs, "
            "typedefs, char and complex are not)"
        )
    if base == "size_t" and stars:
        raise PrototypeError(
            f"{where} '{raw}': arrays of size_t are not supported; use int or long (int64_t)"
        )
    pointer = stars == 1
    restrict = any(w in ("restrict", "__restrict", "__restrict__") for w in words)
    if pointer:  # normalised: double a[] and double const *a read as the judge expects
        declared = f"{'const ' if const else ''}{base} *{'restrict ' if restrict else ''}{name}"
    else:
        declared = f"{base} {name}"
    return CParam(name, declared, base, element, pointer, const and pointer)


def parse_prototype(code: str, function: str) -> Prototype:
    """Find the definition of ``function`` in C source ``code`` and parse its parameters.

    Comments, preprocessor lines, odd spacing and line breaks are tolerated; anything the
    judge cannot drive (non-void return, structs, pointers to pointers, variadic
    arguments, a static function) is refused with a message that says what to change.
    """
    if not re.fullmatch(r"[A-Za-z_]\w*", function or ""):
        raise PrototypeError(f"'{function}' is not a C function name")
    clean = _without_preprocessor(strip_comments(code))
    defs = [d for d in _definitions(clean) if d[1] == function]
    if not defs:
        names = sorted({d[1] for d in _definitions(clean)})
        raise PrototypeError(
            f"no definition of '{function}' found (functions defined in the file: "
            f"{', '.join(names) or 'none'}); new-kernel needs the function's body, not only "
            "its declaration"
        )
    if len(defs) > 1:
        raise PrototypeError(f"'{function}' is defined {len(defs)} times")
    head, _, params_text, line = defs[0]
    head_words = head.replace("*", " * ").split()
    if "static" in head_words:
        raise PrototypeError(
            f"line {line}: '{function}' is static; the judge calls it from outside the file, "
            "so remove 'static'"
        )
    ret = [w for w in head_words if w not in ("inline", "extern", "__inline__", "__inline")]
    if ret != ["void"]:
        raise PrototypeError(
            f"line {line}: '{function}' returns '{' '.join(ret)}'; a kernel returns void and "
            "writes its results through pointer arguments (wrap it in a void function)"
        )
    text = params_text.strip()
    if text in ("", "void"):
        raise PrototypeError(
            f"line {line}: '{function}' takes no parameters; a kernel gets its sizes and "
            "arrays as arguments (global arrays cannot be checked)"
        )
    params = tuple(_parse_param(p, i, function) for i, p in enumerate(text.split(","), 1))
    names = [p.name for p in params]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PrototypeError(f"'{function}': parameter name(s) {dup} used twice")
    if not any(p.pointer and not p.const for p in params):
        raise PrototypeError(
            f"'{function}' has no non-const pointer parameter, so it writes no result the "
            "judge can check; its output must go through a pointer argument"
        )
    return Prototype(function, params)


def other_global_functions(code: str, function: str) -> list[str]:
    """Non-static functions other than ``function`` (the judge allows only the kernel's)."""
    clean = _without_preprocessor(strip_comments(code))
    return sorted(
        {
            name
            for head, name, _, _ in _definitions(clean)
            if name != function and "static" not in head.split()
        }
    )


# --- writing the kernel folder -----------------------------------------------------------


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def _blank(what: str) -> str:
    return _q(f"{BLANK}: {what}")


def function_body(code: str, function: str) -> str:
    """The body of ``function``'s definition in ``code`` ('' when not found)."""
    code = strip_comments(code)
    for m in re.finditer(rf"\b{re.escape(function)}\s*\(", code):
        close = _closing_paren(code, m.end() - 1)
        if close < 0:
            continue
        rest = code[close + 1 :]
        if not rest.lstrip().startswith("{"):
            continue
        start = close + 1 + rest.index("{")
        depth = 0
        for i in range(start, len(code)):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            if depth == 0:
                return code[start : i + 1]
    return ""


#: A subscript that reaches a neighbour: x[i - 1], u[i + nx], v[idx + 1], a[(k-1)*n + j].
_NEIGHBOUR = re.compile(r"\[([^\[\]]*[A-Za-z_]\w*\s*[-+]\s*(?:1|[A-Za-z_]\w*)\b[^\[\]]*)\]")


def neighbour_reads(body: str) -> list[str]:
    """Subscripts of ``body`` that read a neighbour of the element written (a stencil's
    signature), up to three, as written; [] when there are none."""
    found: list[str] = []
    for m in _NEIGHBOUR.finditer(body):
        start = body.rfind("\n", 0, m.start()) + 1
        name = re.search(r"([A-Za-z_]\w*)\s*$", body[start : m.start()])
        text = f"{name.group(1) if name else ''}[{' '.join(m.group(1).split())}]"
        if re.search(r"[-+]\s*1\b", m.group(1)) or re.search(r"[-+]\s*n\w*\b", m.group(1)):
            if text not in found:
                found.append(text)
        if len(found) == 3:
            break
    return found


def draft_kernel_yaml(
    name: str, proto: Prototype, source_name: str, neighbours: list[str] | None = None
) -> str:
    """The kernel.yaml text: what the prototype tells, and a FILL_ME blank for the rest.

    ``neighbours``: subscripts that read a neighbour (:func:`neighbour_reads`); when
    there are any the kernel is a stencil and the hints speak of halo rows and planes."""
    neighbours = neighbours or []
    sizes = [p for p in proto.params if p.kind == "size"]
    scalars = [p for p in proto.params if p.kind == "scalar"]
    arrays = [p for p in proto.params if p.kind == "array"]
    size_names = ", ".join(p.name for p in sizes) or "(none)"
    lines = [
        f"# Kernel spec drafted by `hpcagents new-kernel` from {source_name}, function"
        f" {proto.function}.",
        "# Every value starting with FILL_ME is a blank: replace the whole string by what it asks",
        "# for. The kernel does not load until no blank is left (the error names each one).",
        "# The format is documented in kernels/README.md.",
        f"name: {name}",
        f"title: {_blank('a one-line title, e.g. All-pairs gravitational accelerations')}",
        "description: "
        + _blank(
            "the exact semantics for the agents: what the function computes, the layout and "
            "extent of every array, which elements are written, what holds at size 0"
        ),
        f"function: {proto.function}",
        f"signature: {_q(proto.signature)}",
        f"source: {name}.c",
        "parameters:",
    ]
    halo = ""
    if neighbours:
        lines += [
            f"  # STENCIL: the code reads neighbours ({', '.join(neighbours)}). Give every",
            "  # array its full extent including the halo (ghost) rows/planes the code reads,",
            "  # e.g. shape [nz + 2, ny + 2, nx + 2] for one layer each side of an nz x ny x nx",
            "  # grid. An output written only inside the halo: intent inout, so the halo keeps",
            "  # its values (the judge checks every element, the halo included), and say in",
            "  # the description which rows/planes are written.",
        ]
        halo = "; include the halo rows/planes the code reads, e.g. nz + 2, ny + 2, nx + 2"
    for p in proto.params:
        if p.kind == "size":
            lines.append(
                f"  # {p.declared}: an integer, taken as a size. If it is the row stride of a"
                " 2-D array, make it kind: ld and name it in that array's ld."
            )
            lines.append(f"  - {{name: {p.name}, kind: size}}")
        elif p.kind == "scalar":
            lines.append(f"  # {p.declared}: a {p.element} value, given by each case.")
            lines.append(f"  - {{name: {p.name}, kind: scalar, type: {p.element}}}")
        else:
            lines.append(
                f"  # {p.declared}: "
                + (
                    "const pointer, so an input array."
                    if p.const
                    else "written by the function: say whether it is also read (inout) or "
                    "only written (out: the judge fills it with NaN on entry)."
                )
            )
            lines.append(f"  - name: {p.name}")
            lines.append("    kind: array")
            lines.append(f"    type: {p.element}")
            if p.const:
                lines.append("    intent: in")
            else:
                lines.append(
                    "    intent: "
                    + _blank(
                        "inout (read and written; the safe choice) or out (only written, "
                        "never read)"
                    )
                )
            lines.append(
                "    shape: ["
                + _blank(
                    f"the extents of {p.name} as expressions of the sizes ({size_names}), "
                    f"slowest first, e.g. n or 3*n or m, n{halo}"
                )
                + "]"
            )
            if p.element in ("int", "int64"):
                lines.append(
                    "    # integer array: if it holds indices, give it a generator (see"
                    " kernels/README.md); uniform random integers may index out of bounds."
                )
    lines += [
        "constraints:",
        f"  - Edit only this one C file; it must define {proto.function} with exactly the"
        " signature above.",
        "  - Compiler and flags are fixed by the campaign; do not rely on other flags or build"
        " scripts.",
        "  - OpenMP is available (the file is compiled with -fopenmp).",
        "  - x86-64 SIMD intrinsics (immintrin.h) may be used; the target CPU is the build"
        " machine (-march=native).",
        "  - Standard C only otherwise; no external libraries.",
        "  - Do not print anything and do not read or write files.",
        "# The user's original code, built by the trusted side, is the reference.",
        'reference: {file: original.c, describe: "the user\'s original code (original.c)"}',
        "tolerance: "
        + _blank(
            "how close a candidate must be to the reference: {model: relative, rtol: 1.0e-12, "
            "atol: 1.0e-12} (|x - ref| <= atol + rtol*|ref|) for reordered sums in double, "
            "looser for float or long sums"
        ),
        "flops: "
        + _blank(f"floating-point operations of one call as an expression of {size_names}"),
        "# bytes: what one call must move at least. For a memory-bound kernel (a few flops",
        "# per element: a stencil, a matrix-vector product, a sparse product) it gives the",
        "# GB/s figure shown beside GFLOP/s and the roofline: count each array once, read",
        "# and written (an inout array twice)" + (", halos included." if neighbours else "."),
        "bytes: "
        + _blank(
            "bytes one call must move at least (each array read or written once), as an "
            f"expression of {size_names}, e.g. "
            + " + ".join(f"{_ELEMENT_BYTES[a.element]}*<extent of {a.name}>" for a in arrays[:3])
        ),
        "# Validation cases: validation runs EXACTLY these sizes (candidate against your",
        "# original, every output element checked), before any timing; a bug the cases do",
        "# not reach is never seen. Give every size and scalar by name. Use odd sizes (1, 7,",
        "# 33, 257), sizes that are not multiples of a vector width (8 doubles) nor of a",
        "# likely tile (32, 64), 0 where the code allows it, and edge values of the scalars",
        "# (0, negative)"
        + (
            "; for a stencil, grids as thin as the halo allows (1 interior row)."
            if neighbours
            else "."
        )
        + " Add as many cases as you like.",
        "cases:",
    ]
    what = [
        ("the smallest non-empty size, e.g. 1", "a typical value"),
        ("a small odd size, e.g. 7", "another typical value"),
        ("an odd size around 100, e.g. 129", "an edge value the code must handle (e.g. 0)"),
    ]
    for size_what, scalar_what in what:
        items = [f"{p.name}: {_blank(size_what)}" for p in sizes]
        items += [f"{p.name}: {_blank(scalar_what)}" for p in scalars]
        lines.append("  - {" + ", ".join(items) + "}" if items else "  - {}")
    bench = [
        f"{p.name}: {_blank('the timing size: one call of the baseline takes 0.1 to 1 s')}"
        for p in sizes
    ]
    bench += [f"{p.name}: {_blank('a typical value')}" for p in scalars]
    lines.append("# The timed case: one call of the baseline should take 0.1 to 1 s.")
    lines.append("bench: {" + ", ".join(bench) + "}")
    lines += [
        "# Used by the PM agent only when the model fails to return a valid plan.",
        "fallback_strategies:",
        '  - {name: openmp, description: "Parallelise the outer loop with OpenMP, static'
        ' schedule."}',
        '  - {name: simd, description: "Vectorise the innermost loop (restrict pointers,'
        " '#pragma omp simd', unit stride).\"}",
        '  - {name: blocking, description: "Tile the loops so the data in use stays in cache."}',
        '  - {name: unroll, description: "Unroll the inner loop with independent accumulators."}',
    ]
    return "\n".join(lines) + "\n"


def new_kernel(
    name: str, source: Path, function: str, kernels_dir: Path, force: bool = False
) -> Path:
    """Create ``kernels_dir/name`` from ``function`` in ``source``; return the folder.

    Writes ``<name>.c`` (the baseline the agents edit) and ``original.c`` (the reference),
    both byte-for-byte the user's file, and a kernel.yaml with the blanks marked.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
        raise PrototypeError(
            f"'{name}' is not a kernel name: use letters, digits, '_' and '-' (it names the "
            "folder and the baseline file)"
        )
    source = Path(source)
    if not source.is_file():
        raise PrototypeError(f"{source}: no such file")
    code = source.read_text()
    proto = parse_prototype(code, function)
    others = other_global_functions(code, function)
    if others:
        raise PrototypeError(
            f"{source} also defines {', '.join(others)}: the kernel's file may define only "
            f"{function} as a global function (the judge rejects any other global symbol); "
            "make helpers static and move main() and test code to another file"
        )
    folder = Path(kernels_dir) / name
    if folder.exists() and not force:
        raise PrototypeError(f"{folder} exists; choose another name or pass --force")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / f"{name}.c")
    shutil.copyfile(source, folder / "original.c")
    neighbours = neighbour_reads(function_body(code, function))
    (folder / "kernel.yaml").write_text(draft_kernel_yaml(name, proto, source.name, neighbours))
    return folder
