"""The final round: finalists and the incumbent re-timed side by side, interleaved.

Why: each attempt is timed in its own job, minutes apart from the others, on a machine
whose speed drifts (other tenants, turbo, thermal state). Figures taken that way cannot
decide between two kernels: a slow kernel timed on a quiet machine beats a fast one timed
under load. So selection never compares figures from different jobs. The best few valid
candidates and the incumbent are rebuilt and timed again in ONE exclusive job, in rounds:
every round times every contender once, each right after a fresh timing of the reference,
in an order rotated from round to round, and every timed output is checked again. A
disturbance then hits all contenders alike, and the reference timed beside each one shows
how much the machine moved.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

from .blas import BlasNotFound, find_blas
from .evaluate import (
    BuildConfig,
    BuildFailed,
    EvalConfig,
    _cores,
    _provenance,
    build_harness,
    harness_env,
)
from .kernelspec import Case, KernelSpec
from .sandbox import Limits, run_untrusted


def _sha(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _stats(runs: list[float], flops: float) -> dict[str, Any]:
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
    """Time ``contenders`` (label, source) and the reference interleaved; return the record.

    A contender that fails to build, crashes or gives a wrong output in any timed call
    gets that status and reason and no figure; the others go on.
    """
    started = time.time()
    rounds = rounds or cfg.repeats
    workdir = Path(workdir).resolve()
    threads = cfg.threads or _cores()
    bench = kernel.bench
    if cfg.bench_size:
        bench = Case(cfg.bench_size, cfg.bench_size, cfg.bench_size, bench.alpha, bench.beta)
    flops = kernel.flops(bench.m, bench.n, bench.k)
    entries: list[dict[str, Any]] = []
    try:
        blas = find_blas(cfg.blas)
    except BlasNotFound as exc:
        blas = None
        blas_error = str(exc)
    exes: dict[str, Path] = {}
    for index, (label, source) in enumerate(contenders):
        entry: dict[str, Any] = {
            "label": label,
            "source": str(source),
            "source_sha256": _sha(Path(source)),
            "status": "ok",
            "reason": "",
            "runs_s": [],
        }
        entries.append(entry)
        if blas is None:
            entry.update(status="harness_error", reason=blas_error)
            continue
        build_dir = workdir / f"contender{index}"
        build_dir.mkdir(parents=True, exist_ok=True)
        try:
            exes[label], _ = build_harness(kernel, Path(source), build_dir, build, blas)
        except BuildFailed as failed:
            entry.update(status=failed.status, reason=failed.reason)
    reference_runs: list[float] = []
    sandbox_info: dict[str, Any] | None = None
    limits = Limits(cpu_s=int(cfg.timeout_s * threads) + 30, memory_mb=cfg.memory_mb)
    for r in range(rounds):
        live = [e for e in entries if e["status"] == "ok"]
        if not live:
            break
        shift = r % len(live)
        for entry in live[shift:] + live[:shift]:
            exe = exes[entry["label"]]
            result = exe.parent / "result.json"
            result.unlink(missing_ok=True)
            nonce = secrets.token_hex(16)
            args = [
                str(exe),
                "--out",
                str(result),
                "--seed",
                str(secrets.randbits(31)),  # fresh inputs in every call
                "--tol",
                repr(kernel.tolerance_factor),
                "--repeats",
                "1",
                "--warmup",
                str(cfg.warmup),
                "--bench",
                f"{bench.m},{bench.n},{bench.k},{bench.alpha!r},{bench.beta!r}",
            ]
            assert blas is not None
            run = run_untrusted(
                args,
                exe.parent,
                harness_env(blas, exe.parent, threads),
                cfg.timeout_s,
                limits,
                blas.lib_dirs,
                stdin_text=nonce + "\n",
                use_bwrap=cfg.sandbox,
            )
            sandbox_info = run.sandbox
            if run.returncode is None:
                entry.update(status="timeout", reason=f"round {r + 1}: no result in time")
                continue
            try:
                res = json.loads(result.read_text())
            except (OSError, ValueError):
                entry.update(
                    status="crash",
                    reason=f"round {r + 1}: the run exited with code {run.returncode} "
                    "without a result",
                )
                continue
            timing = res.get("timing") or {}
            if res.get("nonce") != nonce or not timing:
                entry.update(
                    status="harness_error", reason=f"round {r + 1}: no valid timing result"
                )
                continue
            if not timing["outputs_ok"]:
                entry.update(
                    status="wrong_answer",
                    reason=f"round {r + 1}: the timed call's output is wrong",
                )
                continue
            entry["runs_s"].append(float(timing["runs_s"][0]))
            reference_runs.append(float(timing["reference_runs_s"][0]))
    reference = _stats(reference_runs, flops) if reference_runs else None
    for entry in entries:
        if entry["status"] == "ok" and entry["runs_s"]:
            entry.update(_stats(entry["runs_s"], flops))
            entry["pct_of_reference"] = (
                round(100.0 * entry["gflops"] / reference["gflops"], 3)
                if reference and reference["gflops"]
                else None
            )
        else:
            entry.pop("runs_s", None)
            if entry["status"] == "ok":
                entry.update(status="harness_error", reason="never timed")
    return {
        "kernel": kernel.name,
        "case": {"m": bench.m, "n": bench.n, "k": bench.k, "alpha": bench.alpha, "beta": 0.0},
        "flops": flops,
        "rounds": rounds,
        "order": "interleaved: each round times every contender once, each right after the "
        "reference, in an order rotated every round",
        "reference": reference and {**reference, "name": cfg.blas},
        "contenders": entries,
        "provenance": {
            **_provenance(build, blas, threads, started, cfg),
            "sandbox": sandbox_info,
        },
    }
