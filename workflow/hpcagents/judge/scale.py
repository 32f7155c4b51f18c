"""The final round's scale check: does a crowned kernel's gain hold at a larger size?

The bench size is one size. A kernel can win there for a reason that does not carry over
to a larger problem: its working set fits a cache at the bench size and not beyond, or a
fixed buffer covers the bench size and a slow path the rest. A campaign that crowns such
a kernel reports a figure that holds nowhere else (on a 2-core machine the stand-in's
unblocked dgemm read 94% of MKL at the frozen size and 21% at twice it).

So before the crown, the final round re-times the challenger it would crown and the
incumbent side by side with the reference at the *scale case*: every size parameter of
the bench case times ``factor`` (2 by default), fresh inputs each round, every output
checked, in processes of their own started for this case. The crown is refused when

* the challenger fails there (a wrong output, a crash, a timeout, tampering): a kernel
  that is wrong at some size is never crowned; or
* the incumbent is faster there by more than the verdict's margin in significantly many
  rounds (:func:`hpcagents.judge.verdict.reversal`: the verdict's sign test, roles
  swapped). Only a significant reversal refuses: noise alone never takes a real gain
  away, and a gain that merely shrinks is kept and said.

Each contender's % of the reference at both sizes is recorded; ``figure_holds`` says
whether they agree within :data:`FIGURE_TOLERANCE` (the figure a report shows means
something beyond the bench size). The check is skipped, with the reason, when the scale
case would not fit the judge's memory bound (:func:`hpcagents.judge.node_size.memory_bound`)
or its rounds would not fit ``evaluation.timeout_s``; the crown then rests on the bench
size alone, and says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpcagents.judge import node_size
from hpcagents.judge.arena import frame, plan
from hpcagents.judge.blas import BlasInfo
from hpcagents.judge.errors import JudgeError, contender_fault
from hpcagents.judge.hostload import LoadWatch
from hpcagents.judge.process import Reference, Runner
from hpcagents.judge.sandbox import Limits
from hpcagents.judge.timing import (
    BuildConfig,
    Contender,
    EvalConfig,
    Left,
    ReferenceNonFinite,
    TimedRounds,
    check_quiet,
    pct_of_reference,
    reference_figures,
    run_figures,
)
from hpcagents.judge.verdict import Comparison, reversal
from hpcagents.spec.kernelspec import Case, KernelSpec

#: Timed rounds the scale check always runs (a median of three), and at most (fewer when
#: the evaluation's timeout says so): a round at twice every size costs up to 8x one at
#: the bench size, and the sign test refuses a crown from 5 rounds on (5 of 5) and can
#: always decide within 9 (8 of 9).
MIN_ROUNDS, MAX_ROUNDS = 3, 9
#: A figure "holds" when its % of the reference at the scale case is within this
#: fraction of the one at the bench size.
FIGURE_TOLERANCE = 0.10


def scaled(kernel: KernelSpec, case: Case, factor: float) -> Case:
    """``case`` with every size parameter times ``factor`` (scalars kept)."""
    values = dict(case.values)
    for p in kernel.parameters:
        if p.kind == "size" and p.name in values:
            values[p.name] = max(1, int(round(int(values[p.name]) * factor)))
    return Case(values)


def work(kernel: KernelSpec, case: Case) -> float:
    """The case's work: its flops, or its bytes for a kernel that counts none."""
    return kernel.flops(case) or kernel.bytes(case)


@dataclass(frozen=True)
class Built:
    """What the final round built, handed over so the scale check starts fresh processes
    of the same binaries: each contender's runner executable by label, the reference's,
    and how a process is started (environment, limits, read-only library folders)."""

    exes: Mapping[str, Path]
    ref_exe: Path
    env: Mapping[str, str]
    limits: Limits
    ref_limits: Limits
    ro_dirs: list[Path]
    sandbox: bool
    blas: BlasInfo | None
    build: BuildConfig


def rounds_that_fit(
    medians_s: Mapping[str, float], grow: float, cfg: EvalConfig, max_rounds: int
) -> tuple[int, str]:
    """(rounds, "") or (0, why not): how many timed rounds of the scale check fit
    ``cfg.timeout_s``, from the bench-size median of every process in it times ``grow``
    (the work's growth), with the warm-up and the reference's |inputs| call counted."""
    per_round = sum(medians_s.values()) * grow + medians_s.get("reference", 0.0) * grow
    slowest = max(medians_s.values()) * grow
    if slowest > cfg.timeout_s / 2:
        return 0, (
            f"one call would take ~{slowest:.1f} s there, above half of "
            f"evaluation.timeout_s ({cfg.timeout_s:g} s)"
        )
    fit = int((cfg.timeout_s - cfg.warmup * per_round) // per_round) if per_round > 0 else 10**6
    if fit < MIN_ROUNDS:
        return 0, (
            f"{MIN_ROUNDS} rounds would take ~{(MIN_ROUNDS + cfg.warmup) * per_round:.0f} s "
            f"there, above evaluation.timeout_s ({cfg.timeout_s:g} s)"
        )
    return min(max(MIN_ROUNDS, min(max_rounds, MAX_ROUNDS)), fit), ""


def skipped(kernel: KernelSpec, case: Case, factor: float, why: str) -> dict[str, Any]:
    """The record of a scale check that did not run, with why."""
    return {
        "factor": factor,
        "case": dict(case.values),
        "flops": kernel.flops(case),
        "status": "skipped",
        "reason": f"no scale check at {case.label()}: {why}",
        "rounds": 0,
        "min_rounds": MIN_ROUNDS,
        "max_rounds": 0,
        "reference": None,
        "contenders": [],
        "reversal": None,
        "outcome": "skipped",
    }


def outcome_of(record: Mapping[str, Any], winner: str) -> tuple[str, Comparison | None]:
    """(outcome, the reversal test) of a scale check, from its recorded runs (the final
    round stops on it, selection recomputes it: both read the same figures).

    "gain_reversed": the incumbent was significantly faster there (the crown is refused);
    "winner_failed": the challenger failed there (refused); "gain_holds": compared and not
    reversed; "not_compared": the incumbent is not in the check (it failed there, or the
    round had none); "skipped": not run (the crown rests on the bench size)."""
    if record.get("status") != "ok":
        return "skipped", None
    entries = {c["label"]: c for c in record.get("contenders") or []}
    win = entries.get(winner)
    if win is None or win["status"] != "ok":
        return "winner_failed", None
    inc = entries.get("incumbent")
    if winner == "incumbent" or inc is None or inc["status"] != "ok":
        return "not_compared", None
    paired = min(len(win["runs_s"]), len(inc["runs_s"]))  # the incumbent may retire first
    test = reversal(
        win["runs_s"][:paired], inc["runs_s"][:paired], int(record.get("max_rounds") or 1)
    )
    return ("gain_reversed" if test.state == "faster" else "gain_holds"), test


def scale_check(
    kernel: KernelSpec,
    bench: Case,
    factor: float,
    winner: str,
    at_bench: Mapping[str, Mapping[str, Any]],
    ref_median_s: float,
    built: Built,
    workdir: Path,
    cfg: EvalConfig,
    rng: np.random.Generator,
    load: LoadWatch,
    max_rounds: int,
) -> dict[str, Any]:
    """Re-time ``winner`` and the incumbent (when ``at_bench`` has it valid) beside the
    reference at the bench case scaled by ``factor``; returns the ``scale_check`` record
    of final_round.json (see its schema and :func:`outcome_of`).

    ``at_bench`` holds each of them's final-round entry (median_s, pct_of_reference),
    ``ref_median_s`` the reference's median there: they bound the time the check may take.
    Once the reversal test is decided the incumbent is no longer timed (its first rounds
    stay paired with the challenger's); the challenger and the reference go on to
    :data:`MIN_ROUNDS` for their figures.
    """
    case = scaled(kernel, bench, factor)
    labels = [winner] + (
        ["incumbent"]
        if winner != "incumbent" and (at_bench.get("incumbent") or {}).get("status") == "ok"
        else []
    )
    frm = frame(kernel, [case])
    lay = plan(kernel, case, frm)
    bound = node_size.memory_bound(cfg)
    if lay.size > bound:
        return skipped(
            kernel,
            case,
            factor,
            f"its arena needs {lay.size / 2**20:.0f} MiB, above the judge's bound of "
            f"{bound / 2**20:.0f} MiB (half of evaluation.memory_mb or an eighth of the "
            "available memory)",
        )
    grow = work(kernel, case) / max(work(kernel, bench), 1.0)
    medians = {label: float(at_bench[label]["median_s"]) for label in labels}
    medians["reference"] = ref_median_s
    rounds_cap, why = rounds_that_fit(medians, grow, cfg, max_rounds)
    if not rounds_cap:
        return skipped(kernel, case, factor, why)
    flops = kernel.flops(case)
    entries = [
        {
            "label": label,
            "status": "ok",
            "reason": "",
            "runs_s": [],
            "best_s": None,
            "median_s": None,
            "gflops": None,
            "pct_of_reference": None,
            "pct_at_bench": at_bench[label]["pct_of_reference"],
            "figure_holds": None,
        }
        for label in labels
    ]
    record: dict[str, Any] = {
        "factor": factor,
        "case": dict(case.values),
        "flops": flops,
        "status": "ok",
        "reason": "",
        "rounds": 0,
        "min_rounds": MIN_ROUNDS,
        "max_rounds": rounds_cap,
        "reference": None,
        "contenders": entries,
        "reversal": None,
        "outcome": "skipped",
    }
    runners: dict[int, Runner] = {}
    ref_runs: list[float] = []

    def drop(who: int, status: str, reason: str) -> None:
        entries[who].update(status=status, reason=f"{reason} (scale check)", runs_s=[])
        runner = runners.pop(who, None)
        if runner is not None:
            runner.close()

    ref_runner = None
    try:
        for i, label in enumerate(labels):
            where = workdir / f"s{i}"
            where.mkdir(parents=True, exist_ok=True)
            try:
                # a copy inside its own folder: the only one its sandbox sees
                exe = Path(shutil.copy2(built.exes[label], where / "runner"))
                runners[i] = Runner(
                    exe,
                    where,
                    frm,
                    dict(built.env),
                    built.limits,
                    [],
                    built.sandbox,
                    f"s{i}",
                )
            except Exception as exc:  # noqa: BLE001 - this contender's fault alone
                drop(i, *contender_fault(exc, cfg.timeout_s))
        (workdir / "sref").mkdir(parents=True, exist_ok=True)
        exe = Path(shutil.copy2(built.ref_exe, workdir / "sref" / "reference-runner"))
        ref_runner = Runner(
            exe,
            workdir / "sref",
            frm,
            dict(built.env),
            built.ref_limits,
            list(built.ro_dirs),
            built.sandbox,
            "sref",
        )

        def leave(who: int, left: Left) -> None:
            drop(who, *left.status(cfg.timeout_s))

        timed = TimedRounds(
            kernel,
            Reference(kernel, ref_runner),
            lay,
            rng,
            cfg.timeout_s,
            load,
            lambda n: f"scale case {case.label()} (scale check round {n})",
            rotate=True,
            reference_s=ref_runs,
        )

        def decided() -> bool:
            _, test = outcome_of(record, winner)
            return test is None or test.state != "open"

        def retire() -> set[int]:
            # the reversal test is decided: the winner's figure needs no more of the
            # incumbent's calls (at twice the size, the slow ones)
            return {i for i in runners if labels[i] == "incumbent"} if decided() else set()

        # a call of a second or more needs no warm-up round: its first touch of the
        # arena is a small share of it
        long_calls = max(medians.values()) * grow >= 1.0
        timed.run(
            {i: Contender(runners[i], entries[i]["runs_s"]) for i in sorted(runners)},
            leave,
            0 if long_calls else cfg.warmup,
            MIN_ROUNDS,
            rounds_cap,
            enough=decided,
            retire=retire,
        )
        check_quiet(runners, drop, cfg.timeout_s)
    except ReferenceNonFinite:
        return {
            **skipped(kernel, case, factor, "the reference produced NaN/Inf there"),
            "status": "harness_error",
        }
    except JudgeError as exc:
        return {
            **skipped(kernel, case, factor, f"the reference failed there ({exc})"),
            "status": "harness_error",
        }
    finally:
        for runner in [*runners.values(), ref_runner]:
            if runner is not None:
                runner.close()
    record["rounds"] = len(ref_runs)
    if ref_runs:
        record["reference"] = reference_figures(kernel, built.blas, built.build, ref_runs, flops)
    ref_gflops = record["reference"]["gflops"] if record["reference"] else 0.0
    for entry in entries:
        if entry["status"] != "ok" or not entry["runs_s"]:
            if entry["status"] == "ok":
                entry.update(status="harness_error", reason="no round was timed (scale check)")
            continue
        entry.update(run_figures(entry["runs_s"], flops, spread=False))
        entry["pct_of_reference"] = pct_of_reference(entry["gflops"], ref_gflops)
        before = entry["pct_at_bench"]
        entry["figure_holds"] = bool(
            before and abs(entry["pct_of_reference"] / before - 1.0) <= FIGURE_TOLERANCE
        )
    outcome, test = outcome_of(record, winner)
    record["outcome"] = outcome
    record["reversal"] = _rounded(test)
    return record


def _rounded(test: Comparison | None) -> dict[str, Any] | None:
    if test is None:
        return None
    out = asdict(test)
    out["ratios"] = [round(r, 6) for r in out["ratios"]]
    return out


def describe(record: Mapping[str, Any], winner: str) -> str:
    """One sentence for the decision's reason: what the scale check found."""
    if record.get("status") != "ok":
        return str(record.get("reason") or "no scale check")
    case = Case(dict(record["case"])).label()
    entries = {c["label"]: c for c in record["contenders"]}
    win = entries[winner]
    outcome, test = outcome_of(record, winner)
    if outcome == "winner_failed":
        return f"at {case} (x{record['factor']:g}) {winner} failed: {win['reason']}"
    figure = (
        f"{win['gflops']:.2f} GFLOP/s = {win['pct_of_reference']:.1f}% of the reference "
        f"there against {win['pct_at_bench']:.1f}% at the bench size"
    )
    if not win["figure_holds"]:
        figure += f" (the figure does not hold: more than {FIGURE_TOLERANCE:.0%} apart)"
    if test is None:
        return f"at {case} (x{record['factor']:g}, {record['rounds']} rounds): {figure}"
    inc = entries["incumbent"]
    ratio = test.median_ratio  # incumbent / challenger
    side = (
        f"incumbent/{winner} time ratio per round: median {ratio:.3f}, incumbent faster by "
        f"more than the margin in {test.wins} of {test.rounds} rounds "
        f"(sign test p = {test.p_value:.3g})"
    )
    if outcome == "gain_reversed":
        return (
            f"but at {case} (x{record['factor']:g}) the incumbent is faster: "
            f"{inc['gflops']:.2f} vs {win['gflops']:.2f} GFLOP/s; {side}"
        )
    return (
        f"at {case} (x{record['factor']:g}, {record['rounds']} rounds) the gain holds "
        f"({win['gflops']:.2f} vs {inc['gflops']:.2f} GFLOP/s; {side}); {figure}"
    )


def doubt(at_scale: Mapping[str, Any] | None) -> str:
    """A warning when a crowned figure does not hold at the scale case ("" when it does,
    or when there was no check). ``at_scale`` is ``best.json``'s ``selected.at_scale``."""
    if not at_scale or at_scale.get("figure_holds") is not False:
        return ""
    case = Case(dict(at_scale["case"])).label()
    lower = at_scale["pct_of_reference"] < at_scale["pct_at_bench"]
    return (
        f"the crowned kernel's figure does not hold at {case} (x{at_scale['factor']:g}): "
        f"{at_scale['pct_of_reference']:.1f}% of the reference there against "
        f"{at_scale['pct_at_bench']:.1f}% at the bench size"
        + ("; its speed may rely on the bench case fitting a cache" if lower else "")
    )
