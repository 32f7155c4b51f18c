"""What every timed run of the judge shares: the evaluation (one attempt) and the final
round (contenders side by side) both import it, so their figures mean the same thing.

The build and timing settings (:class:`BuildConfig`, :class:`EvalConfig`), the provenance
a figure carries (host, CPU, cores, compiler, BLAS, threads, Slurm allocation), the
reference's identity, a source's hash, and the figures of a series of timed runs.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcagents.judge import racecheck
from hpcagents.judge.blas import BlasInfo
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
