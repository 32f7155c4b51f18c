"""Compile → validate → time one candidate against the kernel's reference library.

Errors are values: every candidate fault ends as a record with a status and a reason,
never as an exception. The reason is what the repair prompt feeds back to the PG, so it
names the case, the element and the size of the error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .artifacts import write_json
from .blas import BlasInfo, BlasNotFound, find_blas
from .kernelspec import Case, KernelError, KernelSpec, load_kernel
from .sandbox import Limits, run_untrusted
from .screen import screen_source, screen_symbols

MAX_OUTPUT = 8000
FAILED_STATUSES = (
    "compile_error",
    "link_error",
    "wrong_answer",
    "crash",
    "timeout",
    "harness_error",
    "no_code",
    "truncated",
    "generation_error",
)


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
    blas: str = "mkl"
    threads: int | None = None
    memory_mb: int = 4096
    sandbox: bool = True  # bubblewrap where it works; rlimits and screens always


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else cc
    except (OSError, subprocess.TimeoutExpired):
        return f"{cc} (not runnable)"


def _truncate(text: str, limit: int = MAX_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def _sha(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _record(kernel: KernelSpec, source: Path, status: str, reason: str, **parts: Any) -> dict:
    return {
        "kernel": kernel.name,
        "source": str(source),
        "source_sha256": _sha(source),
        "status": status,
        "reason": reason,
        "compile": parts.get("compile"),
        "validation": parts.get("validation"),
        "timing": parts.get("timing"),
        "reference": parts.get("reference"),
        "pct_of_reference": parts.get("pct_of_reference"),
        "provenance": parts.get("provenance"),
    }


def failed_generation_record(
    kernel: KernelSpec, source: Path, status: str, reason: str, build: BuildConfig | None = None
) -> dict:
    """An attempt whose LLM answer had no usable code: nothing is compiled or run."""
    started = time.time()
    build = build or BuildConfig()
    return _record(
        kernel,
        source,
        status,
        reason or f"generation failed ({status})",
        provenance=_provenance(build, None, 0, started, EvalConfig()),
    )


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


def _provenance(
    build: BuildConfig, blas: BlasInfo | None, threads: int, started: float, cfg: EvalConfig
) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cores": _cores(),
        "compiler": _compiler_version(build.cc),
        "cflags": list(build.cflags),
        "blas": blas.name if blas else cfg.blas,
        "blas_version": blas.version if blas else "not used",
        "omp_threads": threads,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "wall_s": round(time.time() - started, 3),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm": slurm_info(),
    }


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run in its own process group; on timeout the whole group is killed. None = timeout."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        errors="replace",
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out or ""


def case_reason(case: dict[str, Any], label: str) -> str:
    """The verdict for one failed case, precise enough to repair from."""
    parts = []
    if case["wrong"]:
        bad = case["first_bad"]
        got, want, bound = bad["got"], bad["want"], bad["bound"]
        got, want = float(got), float(want)
        err = abs(got - want)
        hint = ""
        if not math.isfinite(got):
            hint = f" ({_nan_hint(case)})"
        parts.append(
            f"{case['wrong']} of {case['checked']} elements wrong; first C[{bad['i']}][{bad['j']}]"
            f" = {got:.17g} vs reference {want:.17g} (|err| {err:.2e} > bound "
            f"{float(bound):.2e}){hint}"
        )
    if case.get("padding_overwritten"):
        parts.append(
            f"wrote {case['padding_overwritten']} element(s) of C's padding "
            f"(columns n..ldc-1 of each row must not be touched; ldc={case['ldc']})"
        )
    if case.get("inputs_modified"):
        parts.append("modified its input A or B (they are read-only)")
    return f"case {label}: " + "; ".join(parts)


def _nan_hint(case: dict[str, Any]) -> str:
    """Why a kernel may have produced NaN/Inf: what the harness poisoned for this case."""
    poisoned = []
    if _parse_num(case.get("beta", 0.0)) == 0.0:
        poisoned.append(
            "C holds NaN on entry because beta == 0: this element was not written, "
            "or C was read although beta == 0"
        )
    if _parse_num(case.get("alpha", 1.0)) == 0.0:
        poisoned.append("A and B hold NaN because alpha == 0, so they must not be read")
    if case.get("pad"):
        poisoned.append(
            "the padding columns of A (k..lda-1) and B (n..ldb-1) hold NaN and must not be read"
        )
    return "non-finite result; " + ("; ".join(poisoned) if poisoned else "overflow or NaN")


def _parse_num(x: Any) -> float:
    """The harness writes non-finite numbers as strings ("inf", "nan")."""
    return float(x)


class BuildFailed(Exception):
    """A candidate that did not become a runnable harness: status, reason, compile record."""

    def __init__(self, status: str, reason: str, compile: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.compile = status, reason, compile


def build_harness(
    kernel: KernelSpec, source: Path, workdir: Path, build: BuildConfig, blas: BlasInfo
) -> tuple[Path, dict[str, Any]]:
    """Screen, compile, screen the object, link with the harness: ``(executable, compile
    record)``, or :class:`BuildFailed` naming the gate that rejected the source."""
    if not source.is_file() or not source.read_text(errors="replace").strip():
        raise BuildFailed("no_code", f"{source} is missing or empty")
    screened = screen_source(source.read_text(errors="replace"))
    if not screened.ok:
        raise BuildFailed(screened.status, screened.reason)
    obj = workdir / "candidate.o"
    cmd = [build.cc, *build.cflags, "-c", str(source.resolve()), "-o", str(obj)]
    t0 = time.monotonic()
    rc, out = _run(cmd, workdir, dict(os.environ), timeout=120)
    comp = {
        "command": cmd,
        "returncode": rc if rc is not None else -1,
        "output": _truncate(out),
        "seconds": round(time.monotonic() - t0, 3),
    }
    if rc != 0:
        why = "the compiler timed out" if rc is None else "the candidate does not compile"
        raise BuildFailed("compile_error", f"{why}: {_first_error(out)}", comp)
    symbols = screen_symbols(obj)
    if not symbols.ok:
        raise BuildFailed(symbols.status, symbols.reason, comp)
    exe = workdir / "harness"
    link = [
        build.cc,
        *build.cflags,
        *blas.compile_args,
        str(kernel.directory / kernel.harness),
        str(obj),
        *blas.link_args,
        "-lm",
        "-o",
        str(exe),
    ]
    rc, lout = _run(link, workdir, dict(os.environ), timeout=120)
    if rc != 0:
        comp["output"] = _truncate(out + lout)
        comp["link_command"] = link
        raise BuildFailed(
            "link_error", f"linking with the harness failed: {_first_error(lout)}", comp
        )
    return exe, comp


def harness_env(blas: BlasInfo, workdir: Path, threads: int) -> dict[str, str]:
    """The harness's whole environment: nothing of the host's but what it needs."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C",
        **blas.env,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_PROC_BIND": "close",
        "OMP_PLACES": "cores",
        "MALLOC_ARENA_MAX": "4",
        # glibc fills every fresh allocation with bytes 0x7f (N ^ 0xff): an uninitialised
        # double then reads as ~1e306, so kernels that use uninitialised memory fail.
        "MALLOC_PERTURB_": "128",
    }


def evaluate_source(
    kernel: KernelSpec,
    source: Path,
    workdir: Path,
    build: BuildConfig,
    cfg: EvalConfig,
    seed: int | None = None,
) -> dict[str, Any]:
    """Screen, compile, validate and time ``source``; return the evaluation record.

    Gates in order, each a status with a reason: source screen (``forbidden_code``),
    compile (``compile_error``), symbol allowlist (``forbidden_symbol``), link
    (``link_error``), then one sandboxed run of the harness (``crash``, ``timeout``,
    ``wrong_answer``) that validates and, only if every case passed, times.
    """
    started = time.time()
    source = Path(source)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    threads = cfg.threads or _cores()
    sandbox_info: dict[str, Any] | None = None
    try:
        blas: BlasInfo | None = find_blas(cfg.blas)
    except BlasNotFound as exc:
        blas = None
        blas_error = str(exc)

    def prov() -> dict[str, Any]:
        return {**_provenance(build, blas, threads, started, cfg), "sandbox": sandbox_info}

    def fail(status: str, reason: str, **parts: Any) -> dict[str, Any]:
        return _record(kernel, source, status, reason, provenance=prov(), **parts)

    if blas is None:
        return fail("harness_error", blas_error)
    try:
        exe, comp = build_harness(kernel, source, workdir, build, blas)
    except BuildFailed as failed:
        return fail(failed.status, failed.reason, compile=failed.compile)

    seed = seed if seed is not None else secrets.randbits(31)
    bench = kernel.bench
    if cfg.bench_size:
        bench = Case(cfg.bench_size, cfg.bench_size, cfg.bench_size, bench.alpha, bench.beta)
    result_path = workdir / "result.json"
    result_path.unlink(missing_ok=True)
    args = [
        str(exe),
        "--out",
        str(result_path),
        "--seed",
        str(seed),
        "--tol",
        repr(kernel.tolerance_factor),
        "--repeats",
        str(cfg.repeats),
        "--warmup",
        str(cfg.warmup),
        "--bench",
        f"{bench.m},{bench.n},{bench.k},{bench.alpha!r},{bench.beta!r}",
    ]
    for c in kernel.cases:
        args += ["--case", f"{c.m},{c.n},{c.k},{c.alpha!r},{c.beta!r},{c.pad}"]
    env = harness_env(blas, workdir, threads)
    nonce = secrets.token_hex(16)
    limits = Limits(cpu_s=int(cfg.timeout_s * threads) + 30, memory_mb=cfg.memory_mb)
    run = run_untrusted(
        args,
        workdir,
        env,
        cfg.timeout_s,
        limits,
        blas.lib_dirs,
        stdin_text=nonce + "\n",
        use_bwrap=cfg.sandbox,
    )
    sandbox_info = run.sandbox
    rc, run_out = run.returncode, run.output
    tail = f"; output: {run_out[-500:]}" if run_out.strip() else ""
    if rc is None:
        return fail(
            "timeout",
            f"the run did not finish within {cfg.timeout_s:g} s (validation + timing)",
            compile=comp,
        )
    if rc > 128 and run.sandbox["kind"] == "bubblewrap" and not result_path.is_file():
        rc = 128 - rc  # bwrap reports a child killed by signal N as exit code 128 + N
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        hint = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}.get(name, "")
        return fail(
            "crash",
            f"the kernel crashed with signal {name}{hint} during validation or timing",
            compile=comp,
        )
    if rc != 0 or not result_path.is_file():
        if rc == 127 and "error while loading shared libraries" in run_out:
            # the dynamic loader could not start the harness: the environment, not the kernel
            return fail(
                "harness_error",
                f"the harness could not be loaded (reference library {blas.name}){tail}",
                compile=comp,
            )
        if "out of memory" in run_out:
            return fail(
                "crash", f"the run exceeded the memory limit of {cfg.memory_mb} MB", compile=comp
            )
        return fail(
            "crash", f"the harness exited with code {rc} without a result{tail}", compile=comp
        )
    try:
        res = json.loads(result_path.read_text())
    except ValueError as exc:
        return fail("harness_error", f"unreadable harness result: {exc}", compile=comp)
    if res.get("nonce") != nonce:
        return fail(
            "harness_error",
            "the result file does not carry this run's nonce: it was not written by the harness",
            compile=comp,
        )
    return _verdict(kernel, source, res, seed, comp, blas, fail, prov)


def _verdict(kernel, source, res, seed, comp, blas, fail, prov) -> dict[str, Any]:  # noqa: ANN001
    """Turn the harness's raw figures into the record: failures first, then timings."""
    cases, failures = [], []
    ref_faults = [
        f"case {spec_case.label()}"
        for spec_case, case in zip(kernel.cases, res["cases"], strict=True)
        if case.get("reference_nonfinite")
    ]
    if res.get("timing") and res["timing"].get("reference_nonfinite"):
        ref_faults.append("the bench size")
    if ref_faults:
        return fail(
            "harness_error",
            f"the reference {blas.name} produced NaN/Inf in {', '.join(ref_faults)}: "
            "the reference library is faulty, not the kernel",
            compile=comp,
        )
    for spec_case, case in zip(kernel.cases, res["cases"], strict=True):
        case["status"] = "ok" if case["ok"] else "wrong_answer"
        # non-finite figures stay as the harness wrote them ("inf", "nan"): strict JSON
        if not case["ok"]:
            failures.append((spec_case.label(), case_reason(case, spec_case.label())))
        cases.append(case)
    validation = {
        "seed": seed,
        "tolerance_factor": kernel.tolerance_factor,
        "passed": not failures,
        "cases": cases,
    }
    if failures:
        more = ""
        if len(failures) > 1:
            others = [label for label, _ in failures[1:]]
            shown = "; ".join(others[:3]) + ("; ..." if len(others) > 3 else "")
            more = f" (+{len(others)} more failing case(s): {shown})"
        failures = [reason for _, reason in failures]
        return fail("wrong_answer", failures[0] + more, compile=comp, validation=validation)
    t = res["timing"]
    flops = kernel.flops(t["m"], t["n"], t["k"])
    runs, ref_runs = t["runs_s"], t["reference_runs_s"]
    best, ref_best = min(runs), min(ref_runs)
    timing = {
        "m": t["m"],
        "n": t["n"],
        "k": t["k"],
        "flops": flops,
        "warmup": t["warmup"],
        "repeats": t["repeats"],
        "runs_s": runs,
        "best_s": best,
        "median_s": statistics.median(runs),
        "spread": max(runs) / best if best else 0.0,
        "gflops": flops / best / 1e9 if best else 0.0,
        "output_checked": True,
    }
    reference = {
        "blas": blas.name,
        "version": blas.version,
        "runs_s": ref_runs,
        "best_s": ref_best,
        "gflops": flops / ref_best / 1e9 if ref_best else 0.0,
    }
    if not t["outputs_ok"]:
        bad = {**t, "ldc": t["n"]}
        label = f"bench m={t['m']} n={t['n']} k={t['k']} (timed run {t['bad_run'] + 1})"
        return fail(
            "wrong_answer",
            case_reason(bad, label) + " (the output of every timed "
            "call is checked, with B rescaled between calls)",
            compile=comp,
            validation=validation,
        )
    pct = 100.0 * timing["gflops"] / reference["gflops"] if reference["gflops"] else 0.0
    return _record(
        kernel,
        source,
        "ok",
        f"valid; {timing['gflops']:.2f} GFLOP/s = {pct:.1f}% of {blas.name} "
        f"({reference['gflops']:.2f} GFLOP/s) at {t['m']}x{t['n']}x{t['k']}",
        compile=comp,
        validation=validation,
        timing=timing,
        reference=reference,
        pct_of_reference=round(pct, 3),
        provenance=prov(),
    )


def _first_error(output: str) -> str:
    for line in output.splitlines():
        if "error" in line.lower():
            return line.strip()[:300]
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no output)"


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", required=True, help="kernel name (folder under kernels/)")
    parser.add_argument("--source", required=True, help="the C file to evaluate")
    parser.add_argument("--out", help="write the evaluation JSON here (atomically)")
    parser.add_argument("--bench-size", type=int, help="time at m=n=k=N instead of kernel.yaml's")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--blas", choices=("mkl", "openblas"), default="mkl")
    parser.add_argument("--cc", default="gcc")
    parser.add_argument("--cflags", default="-O3 -march=native -fopenmp")
    parser.add_argument("--workdir", help="build directory (default: a temp dir, removed)")


def run_evaluate(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    try:
        kernel = load_kernel(args.kernel)
    except KernelError as exc:
        print(f"hpcagents evaluate: {exc}", file=sys.stderr)
        return 2
    if not Path(args.source).is_file():
        print(f"hpcagents evaluate: no such source file: {args.source}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="hpca-eval-"))
    try:
        rec = evaluate_source(
            kernel,
            Path(args.source),
            workdir,
            BuildConfig(cc=args.cc, cflags=tuple(args.cflags.split())),
            EvalConfig(
                repeats=args.repeats,
                warmup=args.warmup,
                timeout_s=args.timeout,
                bench_size=args.bench_size,
                blas=args.blas,
                threads=args.threads,
            ),
        )
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        write_json(args.out, rec, "evaluation")
    print(f"status: {rec['status']}")
    print(f"reason: {rec['reason']}")
    if rec["timing"]:
        t, r = rec["timing"], rec["reference"]
        print(
            f"candidate: {t['gflops']:.3f} GFLOP/s (best of {t['repeats']}: {t['best_s']:.6f} s,"
            f" spread x{t['spread']:.3f})"
        )
        print(f"reference: {r['gflops']:.3f} GFLOP/s ({r['version']})")
        print(f"% of reference: {rec['pct_of_reference']:.2f}")
    return 0
