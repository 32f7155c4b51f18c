"""One reader of a campaign's results: kernels -> iterations -> PGs -> attempts.

Why: ``status``, ``summary``, ``timeline``, the HTML report and ``select`` each walked
``results/<kernel>/iter<i>/pg<j>/attempt<a>`` with their own globbing and index
parsing, and they disagreed on details (numeric vs text order, a folder without
files). They all read the tree here, through :mod:`hpcagents.core.layout`.

Two ways to read: ``strict=True`` validates every artifact against its schema and
raises on a broken one (selection and the summary, which make figures from them);
``strict=False`` takes what is there and skips what is missing or half-written (views
of a campaign still running: status, the report). An attempt folder without files is
still listed (its job has started), with ``generation``/``evaluation`` None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import read_json, read_json_or_none
from hpcagents.core.layout import EVALUATION, GENERATION, AttemptKey, CampaignLayout, KernelLayout

Record = dict[str, Any]


def _load(path: Path, schema: str, strict: bool) -> Record | None:
    if strict:
        return read_json(path, schema) if path.is_file() else None
    return read_json_or_none(path)


@dataclass(frozen=True)
class Attempt:
    """One attempt folder and its two records (None: not written yet)."""

    directory: Path
    generation: Record | None
    evaluation: Record | None

    @property
    def key(self) -> AttemptKey:
        key = CampaignLayout.attempt_of(self.directory)
        if key is None:
            raise ValueError(f"{self.directory}: not an attempt folder")
        return key

    @property
    def pg(self) -> int:
        return self.key.pg

    @property
    def attempt(self) -> int:
        return self.key.attempt

    @property
    def evaluation_path(self) -> Path:
        return self.directory / EVALUATION

    @property
    def status(self) -> str | None:
        """The evaluation's status (None: not evaluated yet)."""
        return None if self.evaluation is None else str(self.evaluation.get("status"))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def source(self, source_name: str) -> Path:
        return self.directory / source_name


@dataclass(frozen=True)
class PG:
    pg: int
    directory: Path
    attempts: list[Attempt]

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True)
class Iteration:
    iteration: int
    directory: Path
    plan: Record | None
    pgs: list[PG]
    final_round: Record | None
    best: Record | None

    def pg(self, j: int) -> PG | None:
        return next((p for p in self.pgs if p.pg == j), None)

    def attempts(self) -> list[Attempt]:
        return [a for p in self.pgs for a in p.attempts]


@dataclass(frozen=True)
class KernelRun:
    """One kernel's campaign as its files show it."""

    layout: KernelLayout
    iterations: list[Iteration] = field(default_factory=list)
    summary: Record | None = None

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def directory(self) -> Path:
        return self.layout.directory

    def iteration(self, i: int) -> Iteration | None:
        return next((it for it in self.iterations if it.iteration == i), None)

    def attempts(self) -> list[Attempt]:
        return [a for it in self.iterations for a in it.attempts()]


def read_attempt(directory: Path, strict: bool = False) -> Attempt:
    directory = Path(directory)
    return Attempt(
        directory,
        _load(directory / GENERATION, "generation", strict),
        _load(directory / EVALUATION, "evaluation", strict),
    )


def read_pg(kernel: KernelLayout, i: int, j: int, strict: bool = False) -> PG:
    return PG(
        j,
        kernel.pg_dir(i, j),
        [read_attempt(d, strict) for _, d in kernel.attempts(i, j)],
    )


def read_iteration(kernel: KernelLayout, i: int, strict: bool = False) -> Iteration:
    return Iteration(
        iteration=i,
        directory=kernel.iter_dir(i),
        plan=_load(kernel.plan(i), "plan", strict),
        pgs=[read_pg(kernel, i, j, strict) for j, _ in kernel.pgs(i)],
        final_round=_load(kernel.final_round(i), "final_round", strict),
        best=_load(kernel.best(i), "best", strict),
    )


def read_kernel(kernel_dir: Path | KernelLayout, strict: bool = False) -> KernelRun:
    """Everything under ``results/<kernel>/`` (iterations in numeric order)."""
    kernel = kernel_dir if isinstance(kernel_dir, KernelLayout) else KernelLayout(Path(kernel_dir))
    return KernelRun(
        kernel,
        [read_iteration(kernel, i, strict) for i, _ in kernel.iterations()],
        _load(kernel.summary(), "summary", strict),
    )


def read_campaign(layout: CampaignLayout, kernels: list[str] | None = None) -> list[KernelRun]:
    """The kernels of a campaign (``kernels``, else every one with results), leniently."""
    names = kernels if kernels is not None else layout.kernels()
    return [read_kernel(layout.kernel(name)) for name in names]


def read_chain(evaluation_json: Path | str) -> list[Attempt]:
    """A PG's attempts up to and including the one whose evaluation is given (attempt0 …
    attemptN), schema-validated: what selection reads of a PG whose chain has ended."""
    key = CampaignLayout.attempt_of(evaluation_json)
    if key is None:
        raise ValueError(f"{evaluation_json}: not an attempt's evaluation.json")
    # <kernel>/iter<i>/pg<j>/attempt<a>/evaluation.json, spelled as the caller did
    kernel = KernelLayout(Path(evaluation_json).parents[3])
    return [
        read_attempt(kernel.attempt_dir(key.iteration, key.pg, a), strict=True)
        for a in range(key.attempt + 1)
    ]
