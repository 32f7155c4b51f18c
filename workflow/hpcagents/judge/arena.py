"""Where a call's data lives: the layout of every array in the shared-memory arena (frame,
padding, guard zones), fresh inputs before every call, the poison (NaN where nothing may
be read) and the sentinels that fence what may not be written.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcagents.judge.errors import JudgeError
from hpcagents.spec.kernelspec import ELEMENT_TYPES, Case, KernelSpec, Param, evaluate_expression

HEADER_BYTES = 4096
ALIGN = 64
GUARD_BYTES = 64
FLOAT_SENTINEL = -7.77e37
INT_SENTINEL = 0x7E57AB1E
INT_POISON = -(2**31) + 7


PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096
GAP_BYTE = 0xF5  # every byte the judge does not lay out: fenced, compared after each call


@dataclass
class ArrayLayout:
    param: Param
    dtype: np.dtype
    shape: tuple[int, ...]  # logical (the ld's padding excluded; halo included)
    alloc: tuple[int, ...]  # as allocated (last extent = ld)
    offset: int  # bytes from the arena's start
    last_expr: str = ""

    @property
    def count(self) -> int:
        return int(np.prod(self.alloc, dtype=np.int64)) if self.alloc else 0

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize

    def output_region(self) -> tuple[slice, ...]:
        """The elements of the allocation that are the output (not padding, not halo)."""
        h = self.param.halo
        sl = [slice(h, max(h, e - h)) for e in self.shape]
        if self.param.ld:
            sl[-1] = slice(0, self.shape[-1])
        return tuple(sl)

    def write_mask(self) -> np.ndarray | None:
        """Within the output region, the elements the kernel may write (``writes`` in
        kernel.yaml, e.g. the lower triangle ``j <= i``); None when it may write them all.
        The others are fenced: compared bit for bit, never within a tolerance."""
        expr = self.param.writes
        if not expr:
            return None
        region = self.output_region()
        idx = np.indices(tuple(s.stop - s.start for s in region), dtype=np.int64)
        names = {n: idx[d] + region[d].start for d, n in enumerate("ijkl"[: len(region)])}
        return np.broadcast_to(np.asarray(_index_predicate(expr, names), bool), idx.shape[1:])


_INDEX_EXPR = re.compile(r"^[ijkl0-9+\-*/%<>=!() ]+$")


def _index_predicate(expr: str, names: dict[str, np.ndarray]) -> Any:
    """A kernel.yaml index predicate over whole index arrays (i, j, k, l; +-*/%, compares)."""
    if not _INDEX_EXPR.match(expr):
        raise JudgeError(f"writes expression {expr!r}: only i, j, k, l, numbers and operators")
    return eval(expr, {"__builtins__": {}}, names)  # noqa: S307 - checked by the regex above


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _array_layouts(kernel: KernelSpec, names: dict[str, float]) -> list[ArrayLayout]:
    out = []
    for p in kernel.parameters:
        if p.kind != "array":
            continue
        shape = tuple(max(0, int(evaluate_expression(e, names))) for e in p.shape)
        alloc = shape[:-1] + (int(names[p.ld]),) if p.ld else shape
        out.append(ArrayLayout(p, np.dtype(ELEMENT_TYPES[p.type][1]), shape, alloc, 0, p.shape[-1]))
    return out


@dataclass(frozen=True)
class Frame:
    """Where every array lives for the whole life of a runner: a fixed offset and room for
    the largest case it will see. The header and the read-only inputs come first, up to
    ``readonly`` bytes (a page boundary), so the runner maps them once without write
    permission; the outputs follow. Everything between arrays is fenced."""

    offsets: dict[str, int]
    readonly: int
    size: int


def frame(kernel: KernelSpec, cases: list[Case]) -> Frame:
    room: dict[str, int] = {}
    for case in cases:
        for a in _array_layouts(kernel, kernel.names(case)):
            room[a.param.name] = max(room.get(a.param.name, 0), a.nbytes)
    offsets: dict[str, int] = {}
    arrays = [p for p in kernel.parameters if p.kind == "array"]
    offset = HEADER_BYTES
    for p in (p for p in arrays if p.intent == "in"):
        offsets[p.name] = offset
        offset = _align(offset + room.get(p.name, 0) + GUARD_BYTES, ALIGN)
    readonly = offset = _align(offset, PAGE)
    for p in (p for p in arrays if p.intent != "in"):
        offsets[p.name] = offset
        offset = _align(offset + room.get(p.name, 0) + GUARD_BYTES, ALIGN)
    return Frame(offsets, readonly, _align(offset + GUARD_BYTES, PAGE))


@dataclass
class Layout:
    case: Case
    names: dict[str, float]
    arrays: dict[str, ArrayLayout]
    size: int
    frame: Frame | None = None
    _fixed: np.ndarray | None = field(default=None, repr=False)
    _fenced_words: np.ndarray | None = field(default=None, repr=False)

    def output_bytes(self) -> np.ndarray:
        """A mask over the arena's bytes: True where the kernel may write. Everything else
        (header, inputs, padding, halos, untouchable elements, guards, gaps) is fenced."""
        if self._fixed is None:
            mask = np.zeros(self.size, bool)
            for a in self.arrays.values():
                if a.param.intent == "in" or not a.count:
                    continue
                el = np.zeros(a.alloc, bool)
                region = a.output_region()
                writes = a.write_mask()
                el[region] = True if writes is None else writes
                mask[a.offset : a.offset + a.nbytes] = np.repeat(el.reshape(-1), a.dtype.itemsize)
            self._fixed = mask
        return self._fixed

    def fenced_words(self) -> np.ndarray:
        """The fence as 64-bit words (0xFF in every fenced byte): a call's fence check is
        then one XOR, one AND and one test over the arena, not a pass per byte."""
        if self._fenced_words is None:
            fenced = (~self.output_bytes()).astype(np.uint8) * np.uint8(0xFF)
            self._fenced_words = fenced.view(np.uint64)
        return self._fenced_words

    def poisoned(self, p: Param) -> bool:
        """Whether ``p``'s ``poison_when`` (kernel.yaml) holds in this case: a kernel must
        not read the array then (BLAS: A and B when alpha == 0, C when beta == 0), so the
        candidate gets it all NaN (:func:`fill_candidate`) and a NaN in an output is
        explained by it (:func:`hpcagents.judge.checks.nan_hint`)."""
        return bool(p.poison_when) and bool(evaluate_expression(p.poison_when, self.names))


def plan(kernel: KernelSpec, case: Case, fr: Frame | None = None) -> Layout:
    """The layout of one case, inside ``fr`` (by default a frame of that case alone)."""
    fr = fr or frame(kernel, [case])
    names = kernel.names(case)
    arrays = {}
    for a in _array_layouts(kernel, names):
        a.offset = fr.offsets[a.param.name]
        arrays[a.param.name] = a
    return Layout(case, names, arrays, fr.size, fr)


def random_case(kernel: KernelSpec, rng: np.random.Generator) -> Case:
    """A validation case the candidate cannot predict: one of kernel.yaml's cases with every
    size drawn anew (between half and twice its value, at least 1) and a random padding of
    the leading dimensions. Scalars keep their values (they carry the BLAS edge cases)."""
    sized = [
        c
        for c in kernel.cases
        if all(int(c[p.name]) > 0 for p in kernel.parameters if p.kind == "size")
    ] or list(kernel.cases)
    base = sized[int(rng.integers(len(sized)))]
    values = dict(base.values)
    for p in kernel.parameters:
        if p.kind == "size":
            v = int(base[p.name])
            values[p.name] = int(rng.integers(max(1, v // 2), max(2, 2 * v + 4)))
    if any(p.ld for p in kernel.parameters):
        values["pad"] = int(rng.integers(0, 4))
    return Case(values)


def generate_inputs(kernel: KernelSpec, lay: Layout, rng: np.random.Generator) -> dict:
    """Fresh inputs (logical shape) for every in/inout array, from the judge's RNG."""
    data: dict[str, np.ndarray] = {}
    csr: dict[str, dict[str, np.ndarray]] = {}
    for name, a in lay.arrays.items():
        p = a.param
        if p.intent == "out":
            continue
        gen = p.generator
        kind = gen["kind"]
        if kind == "csr":
            m = gen["matrix"]
            if m not in csr:
                csr[m] = _csr(kernel, lay, m, rng)
            arr = csr[m][gen["part"]]
        elif kind == "constant":
            arr = np.full(a.shape, gen.get("value", 0.0))
        elif kind == "spd":
            n = a.shape[0]
            mat = rng.uniform(-1.0, 1.0, (n, n))
            arr = mat @ mat.T / max(n, 1) + np.eye(n)
            arr = (arr + arr.T) / 2
        elif kind == "uniform_positive":
            arr = 1.0 - rng.random(a.shape)
        else:
            lo, hi = gen.get("low", -1.0), gen.get("high", 1.0)
            if a.dtype.kind == "i":
                arr = rng.integers(int(lo), int(hi) + 1, a.shape)
            else:
                arr = rng.uniform(lo, hi, a.shape)
        data[name] = np.asarray(arr).astype(a.dtype, copy=False).reshape(a.shape)
    return data


def csr_row_lengths(rows: int, cols: int, nnz: int, rng: np.random.Generator) -> np.ndarray:
    """Ragged row lengths that add up to ``nnz``: about one row in eight empty, the rest
    drawn from a heavy-tailed law (a few long rows, many short ones), none longer than
    ``cols``. A kernel that assumes equal rows, or reads row_ptr wrong, gets wrong rows."""
    if rows <= 0 or nnz <= 0:
        return np.zeros(max(rows, 0), np.int64)
    weights = rng.pareto(1.5, rows) + 0.05
    weights[rng.random(rows) < 0.125] = 0.0
    if not weights.any():
        weights[int(rng.integers(rows))] = 1.0
    lengths = rng.multinomial(nnz, weights / weights.sum()).astype(np.int64)
    over = np.maximum(lengths - cols, 0)
    lengths -= over
    spare = int(over.sum())
    while spare:  # rows full to cols hand their surplus to rows with room, at random
        room = np.flatnonzero(lengths < cols)
        take = rng.choice(room, size=min(spare, room.size), replace=False)
        lengths[take] += 1
        spare -= take.size
    return lengths


def _csr(kernel: KernelSpec, lay: Layout, m: str, rng: np.random.Generator) -> dict:
    """A CSR matrix with ragged rows (see :func:`csr_row_lengths`) whose columns are
    distinct, sorted and spread over the whole row: entry j of a row of length L lies in
    the j-th of L equal strata of the columns, at a random place in it."""
    spec = kernel.sparse[m]
    rows = int(evaluate_expression(str(spec["rows"]), lay.names))
    cols = int(evaluate_expression(str(spec["cols"]), lay.names))
    nnz = int(lay.names[f"{m}_nnz"])
    lengths = csr_row_lengths(rows, cols, nnz, rng)
    row_ptr = np.zeros(max(rows, 0) + 1, np.int64)
    np.cumsum(lengths, out=row_ptr[1:])
    per = np.repeat(lengths, lengths)
    j = np.arange(nnz, dtype=np.int64) - np.repeat(row_ptr[:-1], lengths)
    lo = (j * cols) // np.maximum(per, 1)
    hi = ((j + 1) * cols) // np.maximum(per, 1)
    col = lo + np.floor(rng.random(nnz) * (hi - lo)).astype(np.int64)
    return {"row_ptr": row_ptr, "col_idx": col, "values": rng.uniform(-1.0, 1.0, nnz)}


def _sentinel(dtype: np.dtype) -> Any:
    return FLOAT_SENTINEL if dtype.kind == "f" else INT_SENTINEL


def _poison(dtype: np.dtype) -> Any:
    return np.nan if dtype.kind == "f" else INT_POISON


class Arena:
    """The shared-memory file the arguments are laid out in (one per process)."""

    def __init__(self, size: int, label: str) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix=f"hpca-{label}-", dir=base))
        self.path = self.dir / "arena"
        self.size = size
        with open(self.path, "wb") as f:
            f.truncate(size)
        self._fd = os.open(self.path, os.O_RDWR)
        self.mm = mmap.mmap(self._fd, size)
        self.bytes = np.frombuffer(self.mm, dtype=np.uint8)

    def view(self, a: ArrayLayout) -> np.ndarray:
        return np.frombuffer(self.mm, dtype=a.dtype, count=a.count, offset=a.offset).reshape(
            a.alloc
        )

    def write_header(self, kernel: KernelSpec, lay: Layout) -> None:
        iv = np.frombuffer(self.mm, dtype=np.int64, count=len(kernel.parameters))
        dv = np.frombuffer(self.mm, dtype=np.float64, count=len(kernel.parameters))
        for i, p in enumerate(kernel.parameters):
            if p.kind == "array":
                iv[i] = lay.arrays[p.name].offset
            elif p.kind == "scalar" and p.type in ("double", "float"):
                v = float(lay.names[p.name])
                dv[i] = float(np.float32(v)) if p.type == "float" else v
            else:
                iv[i] = int(lay.names[p.name])

    def close(self) -> None:
        self.bytes = None  # type: ignore[assignment]
        try:
            self.mm.close()
        except BufferError:
            pass
        os.close(self._fd)
        shutil.rmtree(self.dir, ignore_errors=True)


def fill_reference(arena: Arena, kernel: KernelSpec, lay: Layout, data: dict, absolute: bool):
    """Clean inputs for the reference (no poison): padding 0, outputs 0; |x| if absolute."""
    names = dict(lay.names)
    if absolute:
        for p in kernel.parameters:
            if p.kind == "scalar" and p.type in ("double", "float"):
                names[p.name] = abs(names[p.name])
    arena.write_header(kernel, Layout(lay.case, names, lay.arrays, lay.size, lay.frame))
    for name, a in lay.arrays.items():
        v = arena.view(a)
        v[...] = 0
        if name in data:
            region = tuple(slice(0, e) for e in a.shape)
            src = data[name]
            v[region] = np.abs(src) if absolute and a.dtype.kind == "f" else src


def fill_candidate(arena: Arena, kernel: KernelSpec, lay: Layout, data: dict) -> np.ndarray:
    """The candidate's inputs: poison, sentinels, and the gap pattern in every other byte of
    the arena (header slack, room past each array, guards). Returns the image written."""
    arena.bytes[: lay.size] = GAP_BYTE
    arena.write_header(kernel, lay)
    for name, a in lay.arrays.items():
        p = a.param
        v = arena.view(a)
        out_region = a.output_region()
        if p.intent == "in":
            v[...] = _poison(a.dtype)  # padding
            region = tuple(slice(0, e) for e in a.shape)
            if not (lay.poisoned(p) and a.dtype.kind == "f"):
                v[region] = data[name]
            else:
                v[region] = np.nan
        else:
            v[...] = _sentinel(a.dtype)  # padding and halo of an output: fenced
            if p.intent == "inout" and not (lay.poisoned(p) and a.dtype.kind == "f"):
                v[out_region] = data[name][out_region]
            else:
                v[out_region] = _poison(a.dtype)
            if p.intent == "inout" and p.halo:
                # an inout array's halo is input (boundary values), not a fence
                full = tuple(slice(0, e) for e in a.shape)
                mask = np.ones(a.shape, bool)
                mask[out_region] = False
                v[full][mask] = data[name][mask]
            writes = a.write_mask()
            if writes is not None and p.intent == "out":
                # elements that may not be written hold data of the caller, not poison
                region_view = v[out_region]
                region_view[~writes] = _sentinel(a.dtype)
    return arena.bytes[: lay.size].copy()


def read_outputs(arena: Arena, lay: Layout) -> dict[str, np.ndarray]:
    return {
        name: arena.view(a)[a.output_region()].copy()
        for name, a in lay.arrays.items()
        if a.param.intent != "in"
    }
