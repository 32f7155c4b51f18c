"""The final round: the best candidates and the incumbent re-timed side by side.

Selection must compare figures taken together, not minutes apart on a machine whose
speed drifts. Here every contender and the reference run in their own sandboxed
processes, started once; each round draws fresh inputs at the bench size and times the
reference and every contender one after another, in an order rotated each round so no
one always runs first (cold) or last. Every output of every round is checked; a
contender that fails a check gets its status and reason and no figure. The rounds are
the evaluation's loop of timed calls (:class:`hpcagents.judge.timing.TimedRounds`), with
several contenders and the order rotated, so a figure here means what it means there.

Each contender is judged alone: whatever goes wrong with one (a wrong output, a crash, a
timeout, a fault the judge reports for its process) removes that one with its reason,
and the round goes on with the others. Only a fault of the judge's own side (the
reference, the library) stops the round. Before any timed call, every contender is
validated on a fresh case drawn for this round (sizes, padding, scalars and contents it
cannot predict from the bench size or from earlier calls).

The round times at least ``rounds`` rounds and, while the verdict (:mod:`.verdict`) is
uncertain, more, up to ``max_rounds``. When it would crown a challenger and
``cfg.scale_factor`` is set, the challenger and the incumbent are re-timed at a larger case
before the crown (:mod:`.scale`): a gain that reverses there, or a kernel that fails there,
is not crowned.
"""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpcagents.judge import node_size, scale
from hpcagents.judge.arena import frame, generate_inputs, plan, random_case
from hpcagents.judge.blas import BlasInfo, BlasNotFound, find_blas
from hpcagents.judge.build import build_candidate, build_reference
from hpcagents.judge.checks import check_call, check_reason
from hpcagents.judge.errors import JudgeError, contender_fault
from hpcagents.judge.hostload import LoadWatch, reference_name, widest_spread
from hpcagents.judge.process import Reference, Runner, candidate_call, runner_env
from hpcagents.judge.sandbox import Limits
from hpcagents.judge.timing import (
    BuildConfig,
    Contender,
    EvalConfig,
    Left,
    ReferenceNonFinite,
    TimedRounds,
    check_quiet,
    cores,
    pct_of_reference,
    provenance,
    reference_figures,
    run_figures,
    source_sha256,
)
from hpcagents.judge.timinglock import PhaseLock
from hpcagents.judge.verdict import Verdict, verdict_of
from hpcagents.spec.kernelspec import Case, KernelSpec


def fresh_case(kernel: KernelSpec, rng: np.random.Generator, avoid: Case | None = None) -> Case:
    """A validation case nobody has seen (:func:`random_case`: a kernel.yaml case with
    every size drawn anew and a random padding), never the bench case ``avoid``."""
    for _ in range(100):
        case = random_case(kernel, rng)
        sizes = [p.name for p in kernel.parameters if p.kind == "size"]
        if avoid is None or not sizes or any(case[n] != avoid.get(n) for n in sizes):
            return case
    return case


def final_round(
    kernel: KernelSpec,
    contenders: list[tuple[str, Path]],
    workdir: Path,
    build: BuildConfig,
    cfg: EvalConfig,
    rounds: int | None = None,
    max_rounds: int | None = None,
) -> dict[str, Any]:
    """The side-by-side re-timing (see :func:`_final_round`), holding this host's timing
    lock exclusively throughout: no evaluation builds, validates or times meanwhile."""
    with PhaseLock(enabled=cfg.cpu_lock) as lock:
        lock.exclusive()
        return _final_round(kernel, contenders, workdir, build, cfg, rounds, max_rounds)


def _final_round(
    kernel: KernelSpec,
    contenders: list[tuple[str, Path]],
    workdir: Path,
    build: BuildConfig,
    cfg: EvalConfig,
    rounds: int | None = None,
    max_rounds: int | None = None,
) -> dict[str, Any]:
    """Build every contender (label, source) in the sandbox, validate each on a fresh
    case, then time them interleaved with the reference: ``cfg.warmup`` untimed rounds,
    then at least ``rounds`` (default ``cfg.repeats``) and at most ``max_rounds`` (default
    ``rounds``) timed ones, stopping once the verdict is certain. The contender labelled
    "incumbent" is the one the others are compared with. Returns the final_round.json
    record (see its schema)."""
    started = time.time()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rounds = max(1, rounds or cfg.repeats)
    max_rounds = max(rounds, max_rounds or rounds)
    threads = cfg.threads or cores()
    bench = node_size.bench_case(kernel, cfg)
    flops = kernel.flops(bench)
    rng = np.random.default_rng(secrets.randbits(63))
    vcase = fresh_case(kernel, rng, bench)
    frm = frame(kernel, [vcase, bench])  # one frame: both cases, every runner
    lay, vlay = plan(kernel, bench, frm), plan(kernel, vcase, frm)
    blas: BlasInfo | None = None
    entries: list[dict[str, Any]] = []
    for label, source in contenders:
        entries.append(
            {
                "label": label,
                "source": str(source),
                "source_sha256": source_sha256(source),
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
        "rounds": 0,
        "min_rounds": rounds,
        "max_rounds": max_rounds,
        "warmup": cfg.warmup,
        "validation_case": dict(vcase.values),
        "status": "ok",
        "reason": "",
        "order": [],
        "reference": None,
        "contenders": entries,
        "verdict": None,
    }

    def finish(status: str = "ok", reason: str = "") -> dict[str, Any]:
        record["status"], record["reason"] = status, reason
        record["order"] = [
            ["reference" if w is None else entries[w]["label"] for w in order] for order in orders
        ]
        record["provenance"] = {
            **provenance(build, blas, threads, started, cfg),
            "sandbox": sandbox,
            # [trust] the host while the rounds ran, with the widest spread between rounds
            "host_load": load.record(widest_spread([e["runs_s"] for e in entries])),
        }
        return record

    runners: dict[int, Runner] = {}
    exes: dict[str, Path] = {}  # label -> its built runner (the scale check restarts it)
    # filled round by round (TimedRounds), so a round stopped by a fault still shows them
    orders: list[list[int | None]] = []  # who ran when (None: the reference)
    ref_runs: list[float] = []  # the reference's seconds, one per timed round

    def drop(who: int, status: str, reason: str) -> None:
        """Remove one contender, with its reason; the round goes on without it."""
        entries[who].update(status=status, reason=f"{reason} (final round)")
        runner = runners.pop(who, None)
        if runner is not None:
            runner.close()

    sandbox: dict[str, Any] | None = None
    load = LoadWatch()
    if kernel.reference.library == "blas":
        try:
            blas = find_blas(cfg.blas)
        except BlasNotFound as exc:
            return finish("harness_error", str(exc))
    try:
        ref_exe = build_reference(kernel, build.cc, build.cflags, blas)
    except JudgeError as exc:
        return finish("harness_error", str(exc))
    env = runner_env(threads, blas, workdir)
    limits = Limits(
        cpu_s=int(cfg.timeout_s * threads * (max_rounds + cfg.warmup + 2)) + 30,
        memory_mb=cfg.memory_mb,
    )
    ref_runner = None
    try:
        for i, ((_, source), entry) in enumerate(zip(contenders, entries, strict=True)):
            if not Path(source).is_file():
                entry.update(status="no_code", reason=f"{source} is missing")
                continue
            try:
                built = build_candidate(
                    kernel, Path(source), workdir / f"c{i}", build.cc, build.cflags, cfg.sandbox
                )
                if not built.ok:
                    entry.update(status=built.status, reason=built.reason)
                    continue
                runners[i] = Runner(
                    built.exe, workdir / f"c{i}", frm, env, limits, [], cfg.sandbox, f"c{i}"
                )
                exes[entry["label"]] = built.exe
                sandbox = runners[i].sandbox
            except Exception as exc:  # noqa: BLE001 - this contender's fault, not the round's
                drop(i, *contender_fault(exc, cfg.timeout_s))
        (workdir / "ref").mkdir(exist_ok=True)
        exe = Path(shutil.copy2(ref_exe, workdir / "ref" / "reference-runner"))
        ref_limits = Limits(cpu_s=limits.cpu_s, memory_mb=cfg.memory_mb + 4096)
        ro = list(blas.lib_dirs) if blas else []
        ref_runner = Runner(exe, workdir / "ref", frm, env, ref_limits, ro, cfg.sandbox, "ref")
        reference = Reference(kernel, ref_runner)
        # validation first, on the fresh case: untimed, every contender on the same inputs
        data = generate_inputs(kernel, vlay, rng)
        _, want, mag = reference.run(vlay, data, time.monotonic() + cfg.timeout_s)
        for who in sorted(runners):
            try:
                _, image, after, out = candidate_call(
                    kernel, runners[who], vlay, data, time.monotonic() + cfg.timeout_s
                )
                c = check_call(kernel, vlay, image, after, out, want, mag)
            except Exception as exc:  # noqa: BLE001 - this contender's fault, not the round's
                drop(who, *contender_fault(exc, cfg.timeout_s))
                continue
            if c.reference_nonfinite:
                return finish("harness_error", "the reference produced NaN/Inf")
            if not c.ok:
                label = f"fresh validation case {vcase.label()}"
                drop(who, "wrong_answer", check_reason(kernel, vlay, c, label))

        def leave(who: int, why: Left) -> None:
            drop(who, *why.status(cfg.timeout_s))

        timed = TimedRounds(
            kernel,
            reference,
            lay,
            rng,
            cfg.timeout_s,
            load,
            lambda n: f"bench {bench.label()} (final round {n})",
            rotate=True,
            reference_s=ref_runs,
            orders=orders,
        )
        timed.run(
            {i: Contender(runners[i], entries[i]["runs_s"]) for i in sorted(runners)},
            leave,
            cfg.warmup,
            rounds,
            max_rounds,
            enough=lambda: _verdict(entries, ref_runs, max_rounds).stop,
        )
        check_quiet(runners, drop, cfg.timeout_s)
    except ReferenceNonFinite:
        return finish("harness_error", "the reference produced NaN/Inf")
    except JudgeError as exc:
        return finish("harness_error", str(exc))
    finally:
        for runner in [*runners.values(), ref_runner]:
            if runner is not None:
                runner.close()
    record["rounds"] = len(ref_runs)
    if ref_runs:
        record["reference"] = reference_figures(kernel, blas, build, ref_runs, flops)
    ref_gflops = record["reference"]["gflops"] if record["reference"] else 0.0
    for entry in entries:
        if entry["status"] != "ok":
            entry["runs_s"] = []
            continue
        entry.update(run_figures(entry["runs_s"], flops, spread=False))
        entry["pct_of_reference"] = pct_of_reference(entry["gflops"], ref_gflops)
        entry["reason"] = (
            f"valid on the fresh case and in every round; {entry['gflops']:.2f} GFLOP/s = "
            f"{entry['pct_of_reference']:.1f}% of "
            f"{reference_name(record['reference']['name'])}, side by side"
        )
    verdict = _verdict(entries, ref_runs, max_rounds)
    record["verdict"] = verdict.record()
    if cfg.scale_factor and verdict.winner is not None and record["reference"]:
        record["scale_check"] = scale.scale_check(
            kernel,
            bench,
            cfg.scale_factor,
            verdict.winner,
            {e["label"]: e for e in entries},
            record["reference"]["median_s"],
            scale.Built(exes, ref_exe, env, limits, ref_limits, ro, cfg.sandbox, blas, build),
            workdir / "scale",
            cfg,
            rng,
            load,
            max_rounds,
        )
    return finish()


def _verdict(entries: list[dict[str, Any]], ref_runs: list[float], max_rounds: int) -> Verdict:
    """The verdict over the contenders still valid (see :mod:`.verdict`)."""
    return verdict_of(
        {e["label"]: e["runs_s"] for e in entries if e["status"] == "ok"}, ref_runs, max_rounds
    )
