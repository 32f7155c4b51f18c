"""One host-wide rule for CPU work: many may build and validate, one times, alone.

Why not a Snakemake resource: a resource can only serialise whole jobs. An evaluation
is mostly compiling and validating, which may overlap with other evaluations, and only
its timed calls need the machine to themselves. Serialising whole evaluations made an
iteration's N evaluations queue one after another behind the timing slot. So each
evaluation holds this lock SHARED while it compiles and validates, and EXCLUSIVE while it
times (as does the final round, for its whole re-timing): timed calls never share the
cores with another evaluation's compiler or validation, and everything else overlaps.

It is a readers-writer lock on ``flock`` (held by the process, released by the kernel if
the process dies, so a killed job never leaves it held), with a turnstile so a waiting
timer is not starved by a stream of builders: a builder passes through the turnstile
before it takes its shared hold, and a timer holds the turnstile while it waits. The
lock lives in a host-local directory (``HPCAGENTS_LOCK_DIR``, else ``/tmp``), so it
also orders two campaigns on one workstation; on a cluster each evaluation has its node
to itself anyway.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path


def lock_dir() -> Path:
    base = os.environ.get("HPCAGENTS_LOCK_DIR") or "/tmp"
    path = Path(base) / f"hpcagents-timing-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def shared(directory: Path | None = None) -> Iterator[None]:
    """Hold while compiling or validating: overlaps with other builders, never a timer."""
    directory = directory or lock_dir()
    with _flock(directory / "turnstile.lock", fcntl.LOCK_EX):
        pass  # wait here while a timer is queued
    with _flock(directory / "cpu.lock", fcntl.LOCK_SH):
        yield


@contextmanager
def exclusive(directory: Path | None = None) -> Iterator[None]:
    """Hold while timing: nothing else of any evaluation on this host runs meanwhile."""
    directory = directory or lock_dir()
    with _flock(directory / "turnstile.lock", fcntl.LOCK_EX):
        with _flock(directory / "cpu.lock", fcntl.LOCK_EX):
            yield


class PhaseLock:
    """One evaluation's hold, switched between phases: ``shared()`` to build and validate,
    ``exclusive()`` to time; each switch releases the previous hold first (an flock is
    never upgraded in place: two upgraders would deadlock). ``enabled=False`` holds
    nothing (e.g. a node that is the evaluation's alone)."""

    def __init__(self, enabled: bool = True, directory: Path | None = None) -> None:
        self.enabled = enabled
        self.directory = directory
        self._stack = ExitStack()
        self.mode = "none"

    def shared(self) -> None:
        self._switch("shared", shared)

    def exclusive(self) -> None:
        self._switch("exclusive", exclusive)

    def _switch(self, mode: str, ctx) -> None:  # noqa: ANN001
        if not self.enabled or self.mode == mode:
            return
        self._stack.close()
        self._stack = ExitStack()
        self._stack.enter_context(ctx(self.directory))
        self.mode = mode

    def release(self) -> None:
        self._stack.close()
        self.mode = "none"

    def __enter__(self) -> PhaseLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
