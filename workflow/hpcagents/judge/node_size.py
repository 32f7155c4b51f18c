"""Node-sized timing: a kernel's bench size chosen for the node that times it, frozen.

kernel.yaml's bench case is a size someone picked on some machine. A size tuned on 2
cores says little on a 40-core node: there the reference (MKL) is far below its own
plateau at that size, so "% of the reference" compares a candidate with a reference that
has not warmed up, and the headline figure depends on the size more than on the kernel.

So, unless ``evaluation.bench_size`` fixes it, the bench case is chosen ON THE NODE THAT
TIMES (under Slurm: inside the timing job on the compute node), by growing kernel.yaml's
case (every size parameter scaled by one factor, so its shape is kept) until the
reference's throughput stops changing: grown step by step, each step doubling the work,
until two consecutive steps differ by less than ``plateau`` (5%) (rising while the
reference fills the cores, or falling while the data leaves the caches), or a bound is
hit: the arena would exceed a share of the evaluation's memory limit, the kernel's own
baseline (the slowest thing a campaign times on purpose) would no longer fit the
evaluation's timeout, or the search's wall-time budget is spent.

The choice is written once per kernel and node type (CPU model, usable cores, threads,
compiler, flags, reference library) under ``results/<kernel>/bench_size/`` with the
reference's whole curve, and every later evaluation and final round of that kernel on
such a node reads it, so every figure of a campaign is taken at one size, across resumes
too. The first evaluation of the campaign (iteration 0's baseline) makes the choice; a
file lock lets concurrent evaluations wait for it instead of searching twice.

The search runs the reference and the baseline through the judge's own sandboxed runner
(the baseline is user code, so it runs where candidates run), holding the host's timing
lock exclusively like any timing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hpcagents.core.artifacts import ArtifactError, read_json, write_json
from hpcagents.core.layout import CampaignLayout, KernelLayout
from hpcagents.judge.arena import Layout, frame, generate_inputs, plan
from hpcagents.judge.blas import BlasInfo, BlasNotFound, find_blas
from hpcagents.judge.build import build_candidate, build_reference
from hpcagents.judge.errors import JudgeError, RunnerFault
from hpcagents.judge.machine import last_level_cache_bytes, mem_available_bytes
from hpcagents.judge.process import Reference, Runner, candidate_call, runner_env
from hpcagents.judge.sandbox import Limits
from hpcagents.judge.timinglock import PhaseLock
from hpcagents.spec.kernelspec import Case, KernelSpec

#: ``evaluation.bench_size`` values: an integer fixes every size parameter; "kernel"
#: fixes kernel.yaml's bench case as it is; null (the default) or "node" sizes it here.
KERNEL_SIZE = "kernel"
NODE_SIZE = "node"


class NodeSizeError(RuntimeError):
    """The size search could not run (the reference does not build or run)."""


@dataclass(frozen=True)
class SearchSettings:
    """How the bench size is grown. ``budget_s`` bounds the whole search; the time bound
    keeps the baseline's timed calls within ``timeout_share`` of the evaluation timeout
    (validation, the reference's and the checks' calls need the rest)."""

    step_work: float = 2.0  # each step multiplies the flops by this
    plateau: float = 0.05  # relative change between two steps below which it is a plateau
    max_steps: int = 10
    budget_s: float = 60.0
    memory_share: float = 0.5  # of the evaluation's memory_mb, for one arena
    timeout_share: float = 0.5
    min_ref_s: float = 0.3  # reference calls per step: at least this much time ...
    ref_calls: tuple[int, int] = (5, 40)  # ... and between these many calls (best counts)
    # A plateau ends the search only at a size an evaluation can time as the search did:
    # the reference's call at least this long (a 2 ms call is thread start-up and timer
    # noise: an evaluation's few calls land far from the search's best of 40; seen on a
    # 16-core node, MKL's dgemm at 968: 745 GFLOP/s in the search, 353 in an evaluation)
    min_call_s: float = 0.02
    # ... and a memory-bound kernel (below this many flops per byte on any current CPU)
    # with its data beyond this multiple of the last-level cache, so it times memory, not
    # the cache (seen there: a stencil whose 123 MB fit the 300 MiB L3 read 331% of its
    # reference, 841% at twice the size)
    memory_bound_intensity: float = 1.0
    cache_multiple: float = 2.0


@dataclass(frozen=True)
class BenchChoice:
    """The bench case an evaluation uses and the record of how it was chosen."""

    case: Case
    record: dict[str, Any]


def settings_from(raw_evaluation: Mapping[str, Any]) -> SearchSettings:
    """The search settings from the config's ``evaluation`` section."""
    s = SearchSettings()
    if raw_evaluation.get("bench_search_s") is not None:
        s = replace(s, budget_s=float(raw_evaluation["bench_search_s"]))
    if raw_evaluation.get("bench_plateau") is not None:
        s = replace(s, plateau=float(raw_evaluation["bench_plateau"]))
    return s


def mode_of(bench_size: int | str | None) -> str:
    """``fixed`` (an integer), ``kernel.yaml`` ("kernel") or ``node`` (null / "node")."""
    if bench_size is None or bench_size == NODE_SIZE:
        return "node"
    if bench_size == KERNEL_SIZE:
        return "kernel.yaml"
    if isinstance(bench_size, int) and not isinstance(bench_size, bool) and bench_size > 0:
        return "fixed"
    raise ValueError(
        f"evaluation.bench_size must be a positive integer, 'kernel', 'node' or null; "
        f"got {bench_size!r}"
    )


def bench_case(kernel: KernelSpec, cfg: Any) -> Case:
    """The hook where evaluate and the final round choose their bench case: the frozen
    node-sized case when the campaign chose one (``cfg.bench_values``), else
    ``cfg.bench_size`` (an integer for every size parameter) or kernel.yaml's case."""
    values = getattr(cfg, "bench_values", None)
    if values:
        return Case(dict(values))
    size = cfg.bench_size if isinstance(cfg.bench_size, int) else None
    return kernel.bench_case(size)


def scaled_case(kernel: KernelSpec, factor: float) -> Case:
    """kernel.yaml's bench case with every size parameter times ``factor`` (shape kept),
    rounded to a multiple of 8 above 64 so no step lands on an odd size by accident."""
    values = dict(kernel.bench.values)
    for p in kernel.parameters:
        if p.kind == "size" and p.name in values:
            v = float(values[p.name]) * factor
            values[p.name] = max(1, int(round(v / 8) * 8) if v >= 64 else int(round(v)))
    return Case(values)


def work_degree(kernel: KernelSpec) -> float:
    """How the kernel's work grows with the size factor (dgemm 3, a stencil 3, SpMV 1)."""
    base = kernel.flops(kernel.bench) or kernel.bytes(kernel.bench)
    big = kernel.flops(scaled_case(kernel, 4.0)) or kernel.bytes(scaled_case(kernel, 4.0))
    if not (base > 0 and big > base):
        return 1.0
    return max(0.5, math.log(big / base) / math.log(4.0))


# ---------------------------------------------------------------- node type and the file


def node_identity(
    kernel: KernelSpec, cc: str, cflags: tuple[str, ...], threads: int, blas: str
) -> dict[str, Any]:
    """What a chosen size depends on: the node type (not its host name: every node of a
    partition of one type shares the choice), the build, the reference and the kernel."""
    from hpcagents.judge.machine import cpu_model, usable_cores

    return {
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "threads": threads,
        "cc": cc,
        "cflags": list(cflags),
        "reference": kernel.reference.describe
        + (f" ({blas})" if kernel.reference.library == "blas" else ""),
        "kernel_bench": {k: v for k, v in kernel.bench.values.items()},
    }


def node_key(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def frozen_path(kernel_dir: Path, identity: Mapping[str, Any]) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(identity["cpu_model"])).strip("-")[:40] or "cpu"
    name = f"{slug}-{identity['cores']}c-{identity['threads']}t-{node_key(identity)[:12]}.json"
    return KernelLayout(Path(kernel_dir)).bench_size_dir() / name


def kernel_results_dir(out: Path) -> Path:
    """``results/<kernel>`` from an artifact path below it (``.../iter<i>/...``)."""
    return CampaignLayout.kernel_dir_of(out)


# ---------------------------------------------------------------- choosing


def choose(
    kernel: KernelSpec,
    kernel_dir: Path,
    cc: str,
    cflags: tuple[str, ...],
    cfg: Any,
    settings: SearchSettings | None = None,
) -> BenchChoice:
    """The bench case for an evaluation of ``kernel`` on this node under ``cfg`` (an
    EvalConfig): fixed if the config fixes it, else the frozen node-sized choice, searched
    now if this node type has none yet. Raises NodeSizeError if the search cannot run."""
    mode = mode_of(cfg.bench_size)
    if mode != "node":
        case = kernel.bench_case(cfg.bench_size if mode == "fixed" else None)
        how = (
            f"every size parameter fixed at {cfg.bench_size} by evaluation.bench_size"
            if mode == "fixed"
            else "kernel.yaml's bench case, fixed by evaluation.bench_size: kernel"
        )
        return BenchChoice(case, {"mode": mode, "case": dict(case.values), "why": how})
    threads = cfg.threads or _usable()
    identity = node_identity(kernel, cc, cflags, threads, cfg.blas)
    path = frozen_path(kernel_dir, identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent evaluation waits for the choice
        if path.is_file():
            try:
                frozen = read_json(path, "bench_size")
                return _choice(frozen, path, reused=True)
            except (ValueError, ArtifactError):
                pass  # half-written or stale: choose again and overwrite
        record = search(kernel, cc, cflags, cfg, identity, settings or SearchSettings())
        write_json(path, record, "bench_size")
        return _choice(record, path, reused=False)


def memory_bound(cfg: Any, share: float = SearchSettings.memory_share) -> int:
    """The most bytes one case's arena may take: ``share`` of the evaluation's memory
    limit, and an eighth of the memory available now (the judge holds several copies of
    a case's data: inputs, the reference's and each contender's outputs, poison, fences).
    The size search and the final round's scale check both stop at it."""
    bound = int(share * cfg.memory_mb * 2**20)
    avail = mem_available_bytes()
    return min(bound, avail // 8) if avail else bound


def _usable() -> int:
    from hpcagents.judge.machine import usable_cores

    return usable_cores()


def _choice(frozen: Mapping[str, Any], path: Path, reused: bool) -> BenchChoice:
    case = Case(dict(frozen["case"]))
    rec = {
        "mode": "node",
        "case": dict(frozen["case"]),
        "why": frozen["why"],
        "frozen": str(path),
        "key": frozen["key"],
        "chosen_on": frozen["host"],
        "chosen_at": frozen["chosen_at"],
        "reused": reused,
        "stop": frozen["stop"],
        "curve": frozen["curve"],
    }
    return BenchChoice(case, rec)


def search(
    kernel: KernelSpec,
    cc: str,
    cflags: tuple[str, ...],
    cfg: Any,
    identity: Mapping[str, Any],
    settings: SearchSettings,
) -> dict[str, Any]:
    """Grow kernel.yaml's bench case on this node; return the bench_size.json record."""
    started, t0 = time.time(), time.monotonic()
    threads = int(identity["threads"])
    blas: BlasInfo | None = None
    if kernel.reference.library == "blas":
        try:
            blas = find_blas(cfg.blas)
        except BlasNotFound as exc:
            raise NodeSizeError(str(exc)) from None
    try:
        ref_exe = build_reference(kernel, cc, cflags, blas)
    except JudgeError as exc:
        raise NodeSizeError(f"the reference does not build: {exc}") from None
    ratio = settings.step_work ** (1.0 / work_degree(kernel))
    mem_bound = memory_bound(cfg, settings.memory_share)
    llc = last_level_cache_bytes()
    calls = cfg.warmup + cfg.repeats + 2  # + room for the validation cases
    base_bound = settings.timeout_share * cfg.timeout_s / calls
    curve: list[dict[str, Any]] = []
    stop = ""
    work = Path(tempfile.mkdtemp(prefix="hpca-node-size-"))
    rng = np.random.default_rng(20261204)
    try:
        base = build_candidate(
            kernel,
            kernel.directory / kernel.source,
            work / "base",
            cc,
            cflags,
            use_bwrap=cfg.sandbox,
        )
        base_exe = base.exe if base.ok else None
        with PhaseLock(enabled=cfg.cpu_lock) as lock:
            lock.exclusive()
            factor = 1.0
            for step in range(settings.max_steps):
                case = scaled_case(kernel, factor)
                lay = plan(kernel, case, frame(kernel, [case]))
                if step:
                    grow = kernel.flops(case) / max(kernel.flops(curve[-1]["case"]), 1.0)
                    prev = curve[-1]
                    if lay.size > mem_bound:
                        stop = (
                            f"memory: the next size needs {lay.size / 2**20:.0f} MiB, above "
                            f"{mem_bound / 2**20:.0f} MiB (half of evaluation.memory_mb or an "
                            "eighth of the available memory)"
                        )
                        break
                    if call_cost(prev) * grow > base_bound:
                        stop = (
                            f"time: a timed call of the baseline with the judge's work around "
                            f"it (inputs, reference, check) would take ~"
                            f"{call_cost(prev) * grow:.2f} s at the next size; {calls} must fit "
                            f"{settings.timeout_share:.0%} of evaluation.timeout_s "
                            f"({cfg.timeout_s:g} s)"
                        )
                        break
                    cost = grow * (prev["step_s"])
                    if time.monotonic() - t0 + cost > settings.budget_s:
                        stop = (
                            f"budget: the next step would take ~{cost:.1f} s, beyond the "
                            f"search's {settings.budget_s:g} s (evaluation.bench_search_s)"
                        )
                        break
                point = _measure_step(
                    kernel, case, lay, ref_exe, base_exe, blas, threads, cfg, settings, rng, work
                )
                if (
                    curve
                    and point["ref_gflops"] < (1 - 2 * settings.plateau) * curve[-1]["ref_gflops"]
                ):
                    # a dip: noise (another process) only ever slows a best-of-N figure, a
                    # real fall (the data leaving a cache) stays: measure once more, keep
                    # the better
                    again = _measure_step(
                        kernel, case, lay, ref_exe, None, blas, threads, cfg, settings, rng, work
                    )
                    point["remeasured_gflops"] = round(again["ref_gflops"], 4)
                    if again["ref_gflops"] > point["ref_gflops"]:
                        for key in ("ref_runs_s", "ref_best_s", "ref_gflops", "ref_gbs"):
                            point[key] = again[key]
                    point["step_s"] = round(point["step_s"] + again["step_s"], 3)
                point["factor"] = round(factor, 4)
                curve.append(point)
                if call_cost(point) > base_bound:
                    point["over_time_bound"] = True
                    stop = (
                        f"time: a timed call of the baseline with the judge's work around it "
                        f"took ~{call_cost(point):.2f} s at {point['label']}; {calls} must fit "
                        f"{settings.timeout_share:.0%} of evaluation.timeout_s "
                        f"({cfg.timeout_s:g} s)"
                    )
                    break
                blocker = plateau_blocker(point, settings, llc)
                if blocker:
                    point["not_eligible"] = blocker
                if step:
                    change = point["ref_gflops"] / curve[-2]["ref_gflops"] - 1.0
                    point["change"] = round(change, 4)
                    if abs(change) < settings.plateau and not blocker:
                        stop = (
                            f"plateau: the reference's throughput changed {change:+.1%} from "
                            f"the previous size (below {settings.plateau:.0%})"
                        )
                        break
                factor *= ratio
            else:
                stop = f"steps: {settings.max_steps} steps without a plateau"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not curve:
        raise NodeSizeError("the size search measured nothing")
    timed = [p for p in curve if not p.get("over_time_bound")] or curve[:1]
    # only sizes where a plateau could count; none: the largest within the time bound
    eligible = [p for p in timed if not p.get("not_eligible")]
    within = eligible or timed[-1:]
    pick = within[plateau_start(within, settings.plateau)]
    chosen = curve.index(pick)
    why = (
        f"{pick['label']}: the reference ran {pick['ref_gflops']:.2f} GFLOP/s there "
        f"({len(curve)} size(s) tried from kernel.yaml's {kernel.bench.label()}; stopped on "
        f"{stop.split(':')[0]})"
    )
    if base_exe is None:
        why += "; the baseline does not build, so no time bound from it"
    if not eligible:
        why += f"; no size met the plateau's conditions ({pick.get('not_eligible')})"
    return {
        "kernel": kernel.name,
        "key": node_key(identity),
        "node": dict(identity),
        "host": socket.gethostname(),
        "chosen_at": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "wall_s": round(time.monotonic() - t0, 3),
        "settings": {
            "step_work": settings.step_work,
            "plateau": settings.plateau,
            "budget_s": settings.budget_s,
            "memory_bound_mib": round(mem_bound / 2**20, 1),
            "baseline_call_bound_s": round(base_bound, 3),
            "min_call_s": settings.min_call_s,
            "memory_bound_intensity": settings.memory_bound_intensity,
            "cache_multiple": settings.cache_multiple,
            "last_level_cache_mib": round(llc / 2**20, 1),
        },
        "case": dict(pick["case"]),
        "chosen_index": chosen,
        "stop": stop,
        "why": why,
        "curve": curve,
    }


def plateau_blocker(point: Mapping[str, Any], settings: SearchSettings, llc_bytes: int) -> str:
    """Why a plateau at ``point`` may not end the search ('' when it may): the reference's
    call too short to time reproducibly, or a memory-bound kernel's data still in the
    last-level cache (``llc_bytes``, 0 when unknown: no such rule)."""
    best = float(point["ref_best_s"])
    if best < settings.min_call_s:
        return (
            f"the reference's call takes {best * 1e3:.2f} ms, under {settings.min_call_s * 1e3:g}"
            " ms: an evaluation's few timed calls would not reproduce the search's best"
        )
    flops, bytes_ = float(point["flops"]), float(point["bytes"])
    intensity = flops / bytes_ if bytes_ > 0 else math.inf
    if (
        llc_bytes
        and intensity < settings.memory_bound_intensity
        and bytes_ < settings.cache_multiple * llc_bytes
    ):
        return (
            f"a memory-bound kernel ({intensity:.2f} flop/byte) whose data "
            f"({bytes_ / 2**20:.0f} MiB) is under {settings.cache_multiple:g} x the last-level "
            f"cache ({llc_bytes / 2**20:.0f} MiB): it would time the cache, not the memory"
        )
    return ""


def call_cost(point: Mapping[str, Any]) -> float:
    """What one timed call of an evaluation costs at a size: the baseline's call (the
    slowest kernel timed on purpose), the reference's, and the judge's own work around
    them (fresh inputs, filling both arenas, reading and checking the outputs), counted
    as three times the input generation measured there."""
    return (
        float(point.get("baseline_s") or 0.0)
        + float(point["ref_best_s"])
        + 3.0 * float(point.get("inputs_s") or 0.0)
    )


def plateau_start(curve: list[Mapping[str, Any]], plateau: float) -> int:
    """The smallest size from which the reference stays on its final level: every point
    from it on within ``plateau`` of the level where the growth stopped (the better of
    the last two points). On a quiet node this is the knee of the curve; a point slowed by
    noise after it moves the choice past it, to a larger size, never a smaller one."""
    rates = [float(p["ref_gflops"]) for p in curve]
    level = max(rates[-2:])  # noise only lowers a best-of-N rate
    start = len(rates) - 1
    for i in range(len(rates) - 1, -1, -1):
        if abs(rates[i] / level - 1.0) > plateau:
            break
        start = i
    return start


def _measure_step(
    kernel: KernelSpec,
    case: Case,
    lay: Layout,
    ref_exe: Path,
    base_exe: Path | None,
    blas: BlasInfo | None,
    threads: int,
    cfg: Any,
    settings: SearchSettings,
    rng: np.random.Generator,
    work: Path,
) -> dict[str, Any]:
    """The reference's best time at ``case`` and one call of the baseline there."""
    t_step = time.monotonic()
    env = runner_env(threads, blas, work)
    limits = Limits(cpu_s=int(cfg.timeout_s * threads) + 30, memory_mb=cfg.memory_mb + 4096)
    ro = list(blas.lib_dirs) if blas else []
    t_inputs = time.monotonic()
    data = generate_inputs(kernel, lay, rng)
    inputs_s = time.monotonic() - t_inputs
    deadline = time.monotonic() + cfg.timeout_s
    runs: list[float] = []
    (work / "ref").mkdir(exist_ok=True)
    # the sandbox sees the work dir, not the cache the reference was built in
    ref_exe = Path(shutil.copy2(ref_exe, work / "ref" / "reference-runner"))
    fr = lay.frame or frame(kernel, [case])
    try:
        ref = Runner(ref_exe, work / "ref", fr, env, limits, ro, cfg.sandbox, "ref")
    except JudgeError as exc:
        raise NodeSizeError(f"the reference did not start at {case.label()}: {exc}") from None
    try:
        reference = Reference(kernel, ref)
        reference.timed(lay, data, deadline)  # warm-up: first touch, thread team
        lo, hi = settings.ref_calls
        while len(runs) < hi and (len(runs) < lo or sum(runs) < settings.min_ref_s):
            runs.append(reference.timed(lay, data, deadline)[0])
    except (RunnerFault, JudgeError) as exc:
        raise NodeSizeError(f"the reference failed at {case.label()}: {exc}") from None
    finally:
        ref.close()
    base_s: float | None = None
    base_error = ""
    if base_exe is not None:
        cand_limits = Limits(cpu_s=int(cfg.timeout_s * threads) + 30, memory_mb=cfg.memory_mb)
        runner = None
        try:
            runner = Runner(
                base_exe, base_exe.parent, fr, env, cand_limits, [], cfg.sandbox, "base"
            )
            base_s = candidate_call(kernel, runner, lay, data, deadline)[0]
        except (RunnerFault, JudgeError) as exc:
            # the evaluation will say what is wrong with it; no time bound from it
            base_error = str(getattr(exc, "reason", exc))[:300]
        finally:
            if runner is not None:
                runner.close()
    best = min(runs)
    flops, bytes_ = kernel.flops(case), kernel.bytes(case)
    return {
        "case": dict(case.values),
        "label": case.label(),
        "flops": flops,
        "bytes": bytes_,
        "arena_mib": round(lay.size / 2**20, 2),
        "ref_runs_s": runs,
        "ref_best_s": best,
        "ref_gflops": flops / best / 1e9,
        "ref_gbs": bytes_ / best / 1e9,
        "baseline_s": base_s,
        **({"baseline_error": base_error} if base_error else {}),
        "inputs_s": round(inputs_s, 4),
        "step_s": round(time.monotonic() - t_step, 3),
    }


def describe(record: Mapping[str, Any]) -> str:
    """One line for logs and the table: the chosen case and how."""
    if record.get("mode") != "node":
        return f"{record['mode']}: {record['why']}"
    return f"node-sized ({'reused' if record.get('reused') else 'chosen now'}): {record['why']}"


__all__ = [
    "BenchChoice",
    "NodeSizeError",
    "SearchSettings",
    "bench_case",
    "choose",
    "describe",
    "frozen_path",
    "kernel_results_dir",
    "mode_of",
    "node_identity",
    "scaled_case",
    "search",
    "settings_from",
    "work_degree",
]


def sized_config(
    kernel: KernelSpec,
    out: Path,
    cc: str,
    cflags: tuple[str, ...],
    cfg: Any,
    raw_evaluation: Mapping[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """``cfg`` (an EvalConfig) with the bench case of this campaign on this node, and the
    record of how it was chosen (the evaluation's ``bench_size``). ``out`` is an artifact
    under ``results/<kernel>/``, where the choice is frozen (or under
    ``evaluation.bench_size_dir``/<kernel>, one choice shared by several campaigns: a
    study's runs). A search that cannot run
    falls back to kernel.yaml's case and says so (the evaluation then names the fault)."""
    shared = raw_evaluation.get("bench_size_dir")
    kernel_dir = Path(shared) / kernel.name if shared else kernel_results_dir(out)
    try:
        choice = choose(kernel, kernel_dir, cc, cflags, cfg, settings_from(raw_evaluation))
    except NodeSizeError as exc:
        case = kernel.bench
        return cfg, {
            "mode": "kernel.yaml",
            "case": dict(case.values),
            "why": f"the node-size search failed ({exc}); kernel.yaml's bench case instead",
        }
    return replace(cfg, bench_values=tuple(choice.case.values.items())), choice.record
