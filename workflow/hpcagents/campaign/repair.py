"""The repair policy: which attempt ends a PG's repair chain.

Why one function: the workflow's input function (which attempt to ask for next),
``hpcagents status`` (is a failed PG "repair due" or "failed"?) and selection (which
attempts make up a PG's chain) must agree, or status says a repair is due that the
workflow will never run. All three call :func:`ends_chain`.
"""

from __future__ import annotations

from collections.abc import Sequence


def ends_chain(iteration: int, attempt: int, status: str | None, max_repairs: int | None) -> bool:
    """Whether this evaluated attempt is the last of its PG's chain.

    It is when it passed (status ``ok``), when it is the last attempt allowed
    (``attempt >= max_repairs``), or in iteration 0 (the baseline is never repaired).
    ``max_repairs`` None (not known, e.g. a view without the config) bounds nothing.
    ``status`` None: not evaluated yet, so the chain is not over.
    """
    if status is None:
        return False
    if iteration == 0 or status == "ok":
        return True
    return max_repairs is not None and attempt >= max_repairs


def chain_end(
    statuses: Sequence[str | None], iteration: int, max_repairs: int | None
) -> int | None:
    """The attempt that ends a chain, given the statuses of attempts 0, 1, ... in order
    (None: not evaluated); None while the chain goes on."""
    for a, status in enumerate(statuses):
        if ends_chain(iteration, a, status, max_repairs):
            return a
    return None
