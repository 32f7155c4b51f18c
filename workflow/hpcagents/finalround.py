"""The final round: the best candidates and the incumbent re-timed side by side.

Selection must compare figures taken together, not minutes apart on a machine whose
speed drifts. Here every contender and the reference run in their own sandboxed
processes, started once; each round draws fresh inputs at the bench size and times the
reference and every contender one after another, in an order rotated each round so no
one always runs first (cold) or last. Every output of every round is checked; a
contender that fails a check gets its status and reason and no figure.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import judge
from .blas import BlasInfo, BlasNotFound, find_blas
from .evaluate import BuildConfig, EvalConfig, _cores, _provenance, _record_reference, _sha
from .hostload import LoadWatch, reference_name, widest_spread
from .kernelspec import KernelSpec
from .sandbox import Limits
from .timinglock import PhaseLock


def _figures(runs: list[float], flops: float) -> dict[str, Any]:
    best = min(runs)
    return {
        "runs_s": runs,
        "best_s": best,
        "median_s": statistics.median(runs),
        "gflops": flops / best / 1e9 if best else 0.0,
    }


def final_round(
    kernel: KernelSpec,
    contenders: list[tuple[str, Path]],
    workdir: Path,
    build: BuildConfig,
    cfg: EvalConfig,
    rounds: int | None = None,
) -> dict[str, Any]:
    """The side-by-side re-timing (see :func:`_final_round`), holding this host's timing
    lock exclusively throughout: no evaluation builds, validates or times meanwhile."""
    with PhaseLock(enabled=cfg.cpu_lock) as lock:
        lock.exclusive()
        return _final_round(kernel, contenders, workdir, build, cfg, rounds)


def _final_round(
    kernel: KernelSpec,
    contenders: list[tuple[str, Path]],
    workdir: Path,
    build: BuildConfig,
    cfg: EvalConfig,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Build every contender (label, source) in the sandbox, then time them interleaved
    with the reference for ``rounds`` rounds (default ``cfg.repeats``) after
    ``cfg.warmup`` untimed ones. Returns the final_round.json record (see its schema)."""
    started = time.time()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rounds = rounds or cfg.repeats
    threads = cfg.threads or _cores()
    bench = kernel.bench_case(cfg.bench_size)
    flops = kernel.flops(bench)
    lay = judge.plan(kernel, bench)
    blas: BlasInfo | None = None
    entries: list[dict[str, Any]] = []
    for label, source in contenders:
        entries.append(
            {
                "label": label,
                "source": str(source),
                "source_sha256": _sha(source),
                "status": "ok",
                "reason": "",
                "runs_s": [],
                "best_s": None,
                "median_s": None,
                "gflops": None,
                "pct_of_reference": None,
            }
        )
    record: dict[str, Any] = {
        "kernel": kernel.name,
        "case": dict(bench.values),
        "flops": flops,
        "rounds": rounds,
        "warmup": cfg.warmup,
        "status": "ok",
        "reason": "",
        "order": [],
        "reference": None,
        "contenders": entries,
    }

    def finish(status: str = "ok", reason: str = "") -> dict[str, Any]:
        record["status"], record["reason"] = status, reason
        record["provenance"] = {
            **_provenance(build, blas, threads, started, cfg),
            "sandbox": sandbox,
            # [trust] the host while the rounds ran, with the widest spread between rounds
            "host_load": load.record(widest_spread([e["runs_s"] for e in entries])),
        }
        return record

    sandbox: dict[str, Any] | None = None
    load = LoadWatch()
    if kernel.reference.library == "blas":
        try:
            blas = find_blas(cfg.blas)
        except BlasNotFound as exc:
            return finish("harness_error", str(exc))
    try:
        ref_exe = judge.build_reference(kernel, build.cc, build.cflags, blas)
    except judge.JudgeError as exc:
        return finish("harness_error", str(exc))
    env = judge.runner_env(threads, blas, workdir)
    limits = Limits(cpu_s=int(cfg.timeout_s * threads * (rounds + 2)) + 30, memory_mb=cfg.memory_mb)
    runners: dict[int, judge.Runner] = {}
    ref_runner = None
    rng = np.random.default_rng(secrets.randbits(63))
    try:
        for i, ((_, source), entry) in enumerate(zip(contenders, entries, strict=True)):
            if not Path(source).is_file():
                entry.update(status="no_code", reason=f"{source} is missing")
                continue
            built = judge.build_candidate(
                kernel, Path(source), workdir / f"c{i}", build.cc, build.cflags, cfg.sandbox
            )
            if not built.ok:
                entry.update(status=built.status, reason=built.reason)
                continue
            runners[i] = judge.Runner(
                built.exe, workdir / f"c{i}", lay.size, env, limits, [], cfg.sandbox, f"c{i}"
            )
            sandbox = runners[i].sandbox
            runners[i].watch()
        (workdir / "ref").mkdir(exist_ok=True)
        exe = Path(shutil.copy2(ref_exe, workdir / "ref" / "reference-runner"))
        ref_limits = Limits(cpu_s=limits.cpu_s, memory_mb=cfg.memory_mb + 4096)
        ro = list(blas.lib_dirs) if blas else []
        ref_runner = judge.Runner(
            exe, workdir / "ref", lay.size, env, ref_limits, ro, cfg.sandbox, "ref"
        )
        reference = judge.Reference(kernel, ref_runner)
        ref_runs: list[float] = []
        for r in range(-cfg.warmup, rounds):
            load.sample()  # [trust] between rounds: what runs now is someone else's
            data = judge.generate_inputs(kernel, lay, rng)
            ref_runner.settle()  # after last round's untimed magnitude run
            order: list[int | None] = [None, *sorted(runners)]
            shift = (r + cfg.warmup) % len(order)
            order = order[shift:] + order[:shift]
            record["order"].append(
                ["reference" if w is None else entries[w]["label"] for w in order]
            )
            got: dict[int, tuple[float, Any, Any, Any]] = {}
            want = None
            for who in order:
                deadline = time.monotonic() + cfg.timeout_s
                if who is None:
                    t_ref, want = reference.timed(lay, data, deadline)
                    continue
                try:
                    got[who] = judge.candidate_call(kernel, runners[who], lay, data, deadline)
                except judge.RunnerFault as exc:
                    reason = (
                        f"the call did not finish within {cfg.timeout_s:g} s"
                        if exc.status == "timeout"
                        else exc.reason
                    )
                    entries[who].update(status=exc.status, reason=f"{reason} (final round)")
                    runners.pop(who).close()
            if r < 0:
                continue  # warmup rounds: untimed, on inputs no later round sees
            mag = reference.magnitude(lay, data, time.monotonic() + cfg.timeout_s)
            for who, (t, image, after, out) in got.items():
                c = judge.check_call(kernel, lay, image, after, out, want, mag)
                if c.reference_nonfinite:
                    return finish("harness_error", "the reference produced NaN/Inf")
                if not c.ok:
                    label = f"bench {bench.label()} (final round {r + 1})"
                    entries[who].update(
                        status="wrong_answer", reason=judge.check_reason(kernel, lay, c, label)
                    )
                    runners.pop(who).close()
                else:
                    entries[who]["runs_s"].append(t)
            ref_runs.append(t_ref)
        ref_runner.settle()
        for who in list(runners):
            quiet = judge.check_idle(runners[who], threads)
            if quiet:
                entries[who].update(status="wrong_answer", reason=quiet)
                runners.pop(who).close()
    except judge.JudgeError as exc:
        return finish("harness_error", str(exc))
    finally:
        for runner in [*runners.values(), ref_runner]:
            if runner is not None:
                runner.close()
    record["reference"] = {**_record_reference(kernel, blas, build), **_figures(ref_runs, flops)}
    ref_gflops = record["reference"]["gflops"]
    for entry in entries:
        if entry["status"] != "ok":
            entry["runs_s"] = []
            continue
        entry.update(_figures(entry["runs_s"], flops))
        entry["pct_of_reference"] = 100.0 * entry["gflops"] / ref_gflops if ref_gflops else 0.0
        entry["reason"] = (
            f"valid in every round; {entry['gflops']:.2f} GFLOP/s = "
            f"{entry['pct_of_reference']:.1f}% of "
            f"{reference_name(record['reference']['name'])}, side by side"
        )
    return finish()
