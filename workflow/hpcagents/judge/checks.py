"""Checking one call's outputs: against the reference within the tolerance model, every
fence and sentinel, and the reason a failed check gives (fed to the PG verbatim).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpcagents.judge.arena import HEADER_BYTES, Layout
from hpcagents.spec.kernelspec import KernelSpec, evaluate_expression


def _figure(x: float) -> float | str:
    x = float(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


@dataclass
class Check:
    wrong: int = 0
    checked: int = 0
    max_ratio: float = 0.0
    first_bad: dict[str, Any] | None = None
    padding: dict[str, int] = field(default_factory=dict)  # array -> elements written
    untouchable: dict[str, int] = field(default_factory=dict)  # outside `writes`
    past_end: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    header: bool = False
    gaps: int = 0  # bytes between arrays written
    reference_nonfinite: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.wrong
            or self.padding
            or self.untouchable
            or self.past_end
            or self.modified
            or self.header
            or self.gaps
            or self.reference_nonfinite
        )

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "ok": self.ok,
            "status": "ok" if self.ok else "wrong_answer",
            "wrong": self.wrong,
            "checked": self.checked,
            "max_err_ratio": _figure(self.max_ratio),
            "padding_overwritten": sum(self.padding.values()),
            "inputs_modified": bool(self.modified),
            "reference_nonfinite": self.reference_nonfinite,
        }
        if self.padding:
            rec["padding_arrays"] = dict(self.padding)
        if self.untouchable:
            rec["untouchable_written"] = dict(self.untouchable)
        if self.modified:
            rec["modified_inputs"] = list(self.modified)
        if self.past_end:
            rec["written_past_end"] = list(self.past_end)
        if self.header:
            rec["header_written"] = True
        if self.gaps:
            rec["gap_bytes_written"] = self.gaps
        if self.first_bad:
            rec["first_bad"] = self.first_bad
        return rec


def _fences(lay: Layout, c: Check, changed: np.ndarray) -> None:
    """Name every fenced byte that changed: the header, an input, an output's padding,
    halo or untouchable elements, the room past an array's end, or a gap."""
    if not changed.size:
        return
    if changed[0] < HEADER_BYTES:
        c.header = True
    placed = 0
    for name, a in sorted(lay.arrays.items(), key=lambda kv: kv[1].offset):
        lo, hi = a.offset, a.offset + a.nbytes
        inside = changed[(changed >= lo) & (changed < hi)]
        placed += inside.size
        if inside.size:
            if a.param.intent == "in":
                c.modified.append(name)
            else:
                el = np.unique((inside - lo) // a.dtype.itemsize)
                region = np.zeros(a.alloc, bool)
                region[a.output_region()] = True
                flat = region.reshape(-1)[el]
                if (~flat).any():
                    c.padding[name] = int((~flat).sum())
                if flat.any():
                    c.untouchable[name] = int(flat.sum())
        nxt = [b.offset for b in lay.arrays.values() if b.offset > lo]
        end = min(nxt) if nxt else lay.size
        past = changed[(changed >= hi) & (changed < end)]
        placed += past.size
        if past.size:
            c.past_end.append(name)
    header = int(np.count_nonzero(changed < HEADER_BYTES))
    c.gaps = max(0, int(changed.size) - placed - header)


def check_call(
    kernel: KernelSpec,
    lay: Layout,
    image: np.ndarray,
    after: np.ndarray,
    got: dict[str, np.ndarray],
    want: dict[str, np.ndarray],
    mag: dict[str, np.ndarray] | None,
) -> Check:
    """Everything about one call: every byte outside the outputs exactly as it was (header,
    inputs, padding, halos, untouchable elements, guards, gaps), every output in bound."""
    c = Check()
    tol = kernel.tolerance
    terms = float(evaluate_expression(tol.terms, lay.names)) if tol.model == "error_bound" else 0
    words = np.bitwise_xor(image[: lay.size].view(np.uint64), after[: lay.size].view(np.uint64))
    words &= lay.fenced_words()
    if words.any():  # something fenced changed: find and name every byte
        fenced = ~lay.output_bytes()
        _fences(lay, c, np.flatnonzero((image[: lay.size] != after[: lay.size]) & fenced))
    for name, a in lay.arrays.items():
        if a.param.intent == "in":
            continue
        writes = a.write_mask()
        g = got[name].astype(np.float64)
        w = want[name].astype(np.float64)
        judged = np.ones(g.shape, bool) if writes is None else writes
        finite_ref = np.isfinite(w) & judged
        c.reference_nonfinite += int(np.count_nonzero(~np.isfinite(w) & judged))
        if a.dtype.kind != "f":
            bound = np.zeros_like(w)
        elif tol.model == "error_bound":
            eps = float(np.finfo(a.dtype).eps)
            m = mag[name].astype(np.float64) if mag is not None else np.abs(w)
            bound = tol.factor * terms * eps * np.abs(m) + float(np.finfo(a.dtype).tiny)
        else:
            bound = tol.atol + tol.rtol * np.abs(w)
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs(g - w)
            good = (err <= bound) | ~finite_ref
            ratio = np.where(np.isfinite(g), err / np.where(bound > 0, bound, 1.0), np.inf)
        c.checked += int(np.count_nonzero(finite_ref))
        bad = ~good
        nbad = int(np.count_nonzero(bad))
        if ratio.size:
            r = ratio[finite_ref]
            if r.size:
                mx = float(np.max(np.where(np.isnan(r), np.inf, r)))
                c.max_ratio = max(c.max_ratio, mx)
        if nbad:
            if c.first_bad is None:
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                offset = a.output_region()
                full = [i + (s.start or 0) for i, s in zip(idx, offset, strict=True)]
                c.first_bad = {
                    "array": name,
                    "index": full,
                    "got": _figure(g[idx]),
                    "want": _figure(w[idx]),
                    "bound": _figure(bound[idx]),
                }
            c.wrong += nbad
    return c


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def nan_hint(kernel: KernelSpec, lay: Layout) -> str:
    """Why an output may be NaN/Inf: what the judge poisoned for this case."""
    hints = []
    by_expr: dict[str, list[str]] = {}
    for name, a in lay.arrays.items():
        p = a.param
        if p.poison_when and lay.poisoned(p) and a.dtype.kind == "f":
            if p.intent == "in":
                by_expr.setdefault(p.poison_when, []).append(name)
            else:
                hints.append(
                    f"{name} holds NaN on entry because {p.poison_when}: this element was not "
                    f"written, or {name} was read although {p.poison_when}"
                )
        elif p.intent == "out":
            hints.append(f"{name} holds NaN on entry: this element was not written")
    for expr, names in by_expr.items():
        verb = "holds" if len(names) == 1 else "hold"
        hints.append(f"{_join(names)} {verb} NaN because {expr}, so they must not be read")
    if lay.case.pad:
        pads = [
            f"{n} (columns {a.last_expr}..{a.param.ld}-1)"
            for n, a in lay.arrays.items()
            if a.param.ld and a.param.intent == "in"
        ]
        if pads:
            hints.append(f"the padding of {_join(pads)} holds NaN and must not be read")
    return "non-finite result; " + ("; ".join(hints) if hints else "overflow or NaN")


def check_reason(kernel: KernelSpec, lay: Layout, c: Check, label: str) -> str:
    """The verdict on one failed call, precise enough to repair from."""
    parts = []
    if c.wrong and c.first_bad:
        b = c.first_bad
        got, want, bound = float(b["got"]), float(b["want"]), float(b["bound"])
        idx = "".join(f"[{i}]" for i in b["index"])
        hint = "" if np.isfinite(got) else f" ({nan_hint(kernel, lay)})"
        parts.append(
            f"{c.wrong} of {c.checked} elements wrong; first {b['array']}{idx} = {got:.17g} vs "
            f"reference {want:.17g} (|err| {abs(got - want):.2e} > bound {bound:.2e}){hint}"
        )
    for name, count in c.padding.items():
        a = lay.arrays[name]
        if a.param.ld:
            where = (
                f"columns {a.last_expr}..{a.param.ld}-1 of each row must not be touched; "
                f"{a.param.ld}={int(lay.names[a.param.ld])}"
            )
        else:
            where = f"the halo of {a.param.halo} cell(s) on each side must not be written"
        parts.append(f"wrote {count} element(s) of {name}'s padding ({where})")
    for name, count in c.untouchable.items():
        a = lay.arrays[name]
        parts.append(
            f"wrote {count} element(s) of {name} that must not be written (only the elements "
            f"where {a.param.writes} may be written; the others hold the caller's data and "
            "must come back bit for bit)"
        )
    if c.past_end:
        parts.append(f"wrote past the end of {_join(c.past_end)}")
    if c.modified:
        parts.append(f"modified its input {_join(c.modified)} (inputs are read-only)")
    if c.header:
        parts.append("overwrote the call's arguments (the judge's header)")
    if c.gaps:
        parts.append(f"wrote {c.gaps} byte(s) between the arrays (outside every argument)")
    return f"case {label}: " + "; ".join(parts)
