"""What every timed run of the judge shares: the evaluation (one attempt) and the final
round (contenders side by side) both import it, so their figures mean the same thing.

The build and timing settings (:class:`BuildConfig`, :class:`EvalConfig`), the provenance
a figure carries (host, CPU, cores, compiler, BLAS, threads, Slurm allocation), the
reference's identity, a source's hash, the loop of timed calls itself
(:class:`TimedRounds`: warm-up, fresh inputs, every output checked, a faulty contender
out at once) and the figures of a series of timed runs.

Why one loop: a figure is only comparable with another taken the same way. When the
evaluation and the final round each kept their own loop, a change to one (when inputs
are drawn, which calls are checked, when a timeout starts) silently made their figures
mean different things; here there is one way, and each caller only says how many rounds,
in which order, and what a contender's failure means to it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hpcagents.judge import racecheck
from hpcagents.judge.arena import Layout, generate_inputs
from hpcagents.judge.blas import BlasInfo
from hpcagents.judge.checks import check_call, check_reason
from hpcagents.judge.errors import JudgeError, contender_fault
from hpcagents.judge.hostload import LoadWatch
from hpcagents.judge.process import Reference, Runner, candidate_call, check_frozen
from hpcagents.spec.kernelspec import KernelSpec


@dataclass(frozen=True)
class BuildConfig:
    cc: str = "gcc"
    cflags: tuple[str, ...] = ("-O3", "-march=native", "-fopenmp")


@dataclass(frozen=True)
class EvalConfig:
    repeats: int = 5
    warmup: int = 1
    timeout_s: float = 300.0
    bench_size: int | None = None
    # the frozen node-sized bench case (hpcagents.judge.node_size), when the campaign chose one
    bench_values: tuple[tuple[str, Any], ...] | None = None
    blas: str = "mkl"
    threads: int | None = None
    memory_mb: int = 4096
    sandbox: bool = True  # bubblewrap where it works; rlimits and screens always
    cpu_lock: bool = True  # host-wide timing lock: build/validate shared, timing exclusive
    race: racecheck.RaceConfig = racecheck.RaceConfig()  # race check + thread counts
    # the final round's scale check: the crowned kernel and the incumbent re-timed at the
    # bench case times this factor before the crown (hpcagents.judge.scale); None: none
    scale_factor: float | None = None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores() -> int:
    """The cores this process may run on (its affinity, e.g. a Slurm allocation)."""
    from hpcagents.judge.machine import usable_cores

    return usable_cores()


def compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else cc
    except (OSError, subprocess.TimeoutExpired):
        return f"{cc} (not runnable)"


def source_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def slurm_info() -> dict[str, Any] | None:
    """Where Slurm put this run, read from inside the job (None outside Slurm).

    ``exclusive`` comes from ``scontrol show job``: OverSubscribe=NO means no other job
    may share the node while this one times.
    """
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    info: dict[str, Any] = {
        "job_id": job,
        "node": os.environ.get("SLURMD_NODENAME"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "cpus_on_node": os.environ.get("SLURM_CPUS_ON_NODE"),
        "exclusive": None,
    }
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30
        ).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        info["exclusive"] = fields.get("OverSubscribe") == "NO"
        info["num_cpus"] = fields.get("NumCPUs")
        info["scontrol_oversubscribe"] = fields.get("OverSubscribe")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    return info


def provenance(
    build: BuildConfig, blas: BlasInfo | None, threads: int, started: float, cfg: EvalConfig
) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores": cores(),
        "compiler": compiler_version(build.cc),
        "cflags": list(build.cflags),
        "blas": blas.name if blas else cfg.blas,
        "blas_version": blas.version if blas else "not used",
        "omp_threads": threads,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "wall_s": round(time.time() - started, 3),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm": slurm_info(),
    }


def reference_record(kernel: KernelSpec, blas: BlasInfo | None, build: BuildConfig) -> dict:
    ref = kernel.reference
    if ref.library == "blas" and blas is not None:
        return {"name": blas.name, "version": blas.version}
    sha = source_sha256(kernel.directory / ref.file)[:12]
    return {
        "name": ref.file,
        "version": f"{ref.file} (sha256 {sha}) built with {build.cc} {' '.join(build.cflags)}",
    }


def reference_figures(
    kernel: KernelSpec, blas: BlasInfo | None, build: BuildConfig, runs: list[float], flops: float
) -> dict[str, Any]:
    """The reference's record: what it is (:func:`reference_record`) and the figures of
    its timed calls, without a spread (a contender's spread is the one that matters)."""
    return {**reference_record(kernel, blas, build), **run_figures(runs, flops, spread=False)}


def pct_of_reference(gflops: float, reference_gflops: float) -> float:
    """A contender's GFLOP/s as a percentage of the reference's (0 without a reference)."""
    return 100.0 * gflops / reference_gflops if reference_gflops else 0.0


def run_figures(runs: list[float], flops: float, spread: bool = True) -> dict[str, Any]:
    """The figures of a series of timed calls: best and median time, GFLOP/s at the best,
    and (evaluation) the spread between repeats; the final round states its spread per
    round in its host record instead."""
    best = min(runs)
    figures: dict[str, Any] = {
        "runs_s": runs,
        "best_s": best,
        "median_s": statistics.median(runs),
    }
    if spread:
        figures["spread"] = max(runs) / best if best else 0.0
    figures["gflops"] = flops / best / 1e9 if best else 0.0
    return figures


# --- the timed calls --------------------------------------------------------------------


class ReferenceNonFinite(JudgeError):
    """The reference's output at the bench size holds NaN/Inf: its side is at fault, not
    a contender's, and no figure of these rounds can stand."""


@dataclass
class Contender:
    """One contender's runner (a sandboxed process, started once) and the seconds of its
    timed calls whose output passed the check, one per timed round it stayed in."""

    runner: Runner
    runs_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Left:
    """Why a contender left the timed rounds: its call or its check raised (``fault``:
    a :class:`~hpcagents.judge.errors.RunnerFault` for a crash, a timeout or tampering, a
    :class:`JudgeError` for a fault the judge met on its process), or its output was
    wrong (``wrong``: the reason, naming the case and the round)."""

    fault: Exception | None = None
    wrong: str = ""

    def status(self, timeout_s: float) -> tuple[str, str]:
        """(status, reason) the contender leaves with."""
        if self.fault is not None:
            return contender_fault(self.fault, timeout_s)
        return "wrong_answer", self.wrong


def check_quiet(
    runners: Mapping[int, Runner], drop: Callable[[int, str, str], None], timeout_s: float
) -> None:
    """After the timed rounds: every contender's process must have done nothing while it
    was frozen (:func:`~hpcagents.judge.process.check_frozen`); one that did, or whose
    check fails, is dropped with its status and reason (``drop`` may change ``runners``)."""
    for who in list(runners):
        try:
            quiet = check_frozen(runners[who])
        except Exception as exc:  # noqa: BLE001 - this contender's fault alone
            drop(who, *contender_fault(exc, timeout_s))
            continue
        if quiet:
            drop(who, "tampering", quiet)


@dataclass
class TimedRounds:
    """The timed calls of the judge: the evaluation's (one contender) and the final
    round's (several, side by side).

    Each round draws fresh inputs at the bench size from the judge's RNG, looks at the
    host's load, then calls the reference (timed like a contender) and every contender
    still in, each process frozen while another runs, in ``[reference, contenders...]``
    order or, with ``rotate``, that order rotated by one each round (no one always runs
    first, cold, or last). The first ``warmup`` rounds are untimed and unchecked, on
    inputs no later round sees. In a timed round the reference also runs on |inputs|
    (the error bound's magnitude) and every contender's output is checked; only a
    checked call's seconds count. A contender whose call or check raises, or whose output
    is wrong, leaves at once: the caller's ``leave`` is told why (it may raise, ending
    the rounds). A failure of the reference (:class:`JudgeError`) or a NaN/Inf in its
    output (:class:`ReferenceNonFinite`) ends the rounds: the judge's side is at fault.

    ``reference_s`` and ``orders`` grow round by round, so a caller that stops on an
    exception still has the rounds that ran.
    """

    kernel: KernelSpec
    reference: Reference
    lay: Layout  # the bench case, in the frame every runner was started with
    rng: np.random.Generator
    timeout_s: float
    load: LoadWatch
    name_round: Callable[[int], str]  # timed round n (from 1) as a wrong answer names it
    deadline: float | None = None  # of every contender call (None: timeout_s from each)
    rotate: bool = False
    reference_s: list[float] = field(default_factory=list)  # one per timed round
    orders: list[list[int | None]] = field(default_factory=list)  # per round; None: reference

    def run(
        self,
        contenders: Mapping[int, Contender],
        leave: Callable[[int, Left], None],
        warmup: int,
        rounds: int,
        max_rounds: int | None = None,
        enough: Callable[[], bool] = lambda: False,
        retire: Callable[[], set[int]] = set,
    ) -> None:
        """``warmup`` untimed rounds, then timed ones until ``max_rounds`` (default
        ``rounds``), or from ``rounds`` on once ``enough()`` says so (the final round's
        verdict is certain), or when no contender is left. After each timed round the
        contenders ``retire()`` names stop being timed, their runs kept: the first rounds
        of every contender stay paired (the scale check stops timing an incumbent whose
        comparison is decided)."""
        active = dict(contenders)
        max_rounds = max(rounds, max_rounds or rounds)
        n = 0  # rounds so far, warm-up included
        while active:
            self._round(active, leave, n, timed=n >= warmup)
            n += 1
            if n > warmup:
                for who in retire():
                    active.pop(who, None)
            done = len(self.reference_s)
            if n > warmup and (done >= max_rounds or (done >= rounds and enough())):
                break

    def _round(
        self,
        active: dict[int, Contender],
        leave: Callable[[int, Left], None],
        n: int,
        timed: bool,
    ) -> None:
        kernel, lay = self.kernel, self.lay

        def out(who: int, why: Left) -> None:
            del active[who]
            leave(who, why)

        data = generate_inputs(kernel, lay, self.rng)
        self.load.sample()  # between calls: what runs now is someone else's
        order: list[int | None] = [None, *sorted(active)]
        if self.rotate:
            shift = n % len(order)
            order = order[shift:] + order[:shift]
        self.orders.append(order)
        got: dict[int, tuple[float, np.ndarray, np.ndarray, dict]] = {}
        t_ref, want = 0.0, None
        for who in order:
            deadline = time.monotonic() + self.timeout_s
            if who is None:
                t_ref, want = self.reference.timed(lay, data, deadline)
                continue
            if self.deadline is not None:
                deadline = self.deadline
            try:
                got[who] = candidate_call(kernel, active[who].runner, lay, data, deadline)
            except Exception as exc:  # noqa: BLE001 - this contender's fault alone
                out(who, Left(fault=exc))
        if not timed:
            return  # a warm-up round: untimed, and on inputs no later round sees
        mag = self.reference.magnitude(lay, data, time.monotonic() + self.timeout_s)
        for who, (t, image, after, result) in got.items():
            try:
                c = check_call(kernel, lay, image, after, result, want, mag)
            except Exception as exc:  # noqa: BLE001 - this contender's fault alone
                out(who, Left(fault=exc))
                continue
            if c.reference_nonfinite:
                raise ReferenceNonFinite(
                    f"the reference {kernel.reference.describe} produced NaN/Inf at the "
                    "bench size: the reference is faulty, not the kernel"
                )
            if not c.ok:
                name = self.name_round(len(self.reference_s) + 1)
                out(who, Left(wrong=check_reason(kernel, lay, c, name)))
            else:
                active[who].runs_s.append(t)
        self.reference_s.append(t_ref)
