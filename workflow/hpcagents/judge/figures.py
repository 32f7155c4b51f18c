"""Figures that fit the kernel: GB/s beside GFLOP/s for a memory-bound kernel, and the
reference named as it is.

A memory-bound kernel (a stencil, a matrix-vector product, SpMV) is limited by the bytes
it moves, not the flops it does: its GFLOP/s alone says little, its GB/s set beside the
host's STREAM bandwidth says how close it is to the wall. The bytes come from the
kernel's own ``bytes`` expression (kernel.yaml), the same one the roofline uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpcagents.judge.hostload import reference_name
from hpcagents.spec.kernelspec import KernelSpec

#: Without a measured machine model, a kernel doing fewer flops per byte than this is
#: taken as memory-bound (typical x86-64 ridge points lie between 4 and 15 flop/byte).
DEFAULT_RIDGE = 4.0


def intensity(kernel: KernelSpec, case: Mapping[str, Any]) -> float | None:
    """Flops per byte moved at ``case`` (None when the bytes are not known)."""
    try:
        flops, moved = kernel.flops(case), kernel.bytes(case)
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    return flops / moved if moved > 0 else None


def memory_gbps(
    kernel: KernelSpec, case: Mapping[str, Any], gflops: float | None, ridge: float | None = None
) -> float | None:
    """GB/s moved at ``gflops`` when the kernel is memory-bound at ``case``, else None.

    ``ridge`` is the host's measured peak/bandwidth (the roofline record's
    ``ridge_intensity``) when known."""
    ai = intensity(kernel, case)
    if ai is None or not isinstance(gflops, int | float):
        return None
    if ai >= min(ridge or DEFAULT_RIDGE, DEFAULT_RIDGE):
        return None
    return gflops / ai


def gbps_from_record(gflops: float | None, roofline: Mapping[str, Any] | None) -> float | None:
    """GB/s of a figure whose evaluation's roofline record shows a memory-bound kernel
    (else None).

    Memory-bound here means fewer flops per byte than the host's measured ridge point
    AND than :data:`DEFAULT_RIDGE`: a machine model measured on a busy host can report a
    starved bandwidth that would make even a dgemm look memory-bound."""
    if not isinstance(roofline, Mapping):
        return None
    ai = roofline.get("arithmetic_intensity")
    ridge = roofline.get("ridge_intensity")
    if not isinstance(gflops, int | float) or not isinstance(ai, int | float) or ai <= 0:
        return None
    limit = min(ridge, DEFAULT_RIDGE) if isinstance(ridge, int | float) else DEFAULT_RIDGE
    return gflops / ai if ai < limit else None


__all__ = ["DEFAULT_RIDGE", "gbps_from_record", "intensity", "memory_gbps", "reference_name"]
