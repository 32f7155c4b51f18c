"""Benchmark: node-sized timing on this machine, per kernel (not a test; it prints figures).

For every kernel that ships a scripted/ set, as a campaign on this node would do it:

1. the bench size chosen for this node (hpcagents.judge.node_size: grown from kernel.yaml's
   case until the reference plateaus, within the memory/time/budget bounds), with the
   reference's GFLOP/s (and GB/s) there;
2. every honest hand-written variant of the scripted model (kernels/<k>/scripted/*.c but
   those script.yaml marks broken) screened by the real judge at kernel.yaml's case (one
   timed call each), the best ``--top`` (3) evaluated at the chosen size, the best valid
   one there kept: its % of the reference there;
3. that best variant evaluated again at twice the size (every size parameter x 2): its
   % of the reference there. Node-sized timing is meant to make the two agree (within
   10%): the size is on the reference's plateau;
4. the machine model's FP64 peak (measured fresh: FMA micro-benchmark with every core,
   both vector widths) beside its spec cross-check and MKL's best dgemm seen above
   (at most 100% of the peak, or the peak is wrong).

Every figure is from one run on this machine, labelled with it; the scripted variants are
hand-written code served by a stand-in, not an LLM's. Usage (the 16-core node: after
``bash .node/setup.sh``):

    .venv/bin/python tests/bench/node_table.py [--kernels dgemm stencil3d] [--out t.json]

``--dir`` keeps the frozen size choices (default results/node_table), so a second run
reuses them, as a resumed campaign does; ``--fresh`` searches again.

``--from-suite DIR`` reads a finished ``hpcagents suite --dir DIR`` instead of screening
the variants: per kernel, the size that campaign chose for this node (its frozen choice,
reused, no new search), the campaign's own best kernel and its figure there; the best is
then evaluated again in this run at that size and at twice it, side by side with the
reference each time. So every row is the product's: what the campaign chose and crowned.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from hpcagents.core.artifacts import REPO_DIR, write_json
from hpcagents.judge import node_size, scale
from hpcagents.judge.evaluate import evaluate_source
from hpcagents.judge.machine import (
    cpu_model,
    describe,
    machine_model,
    mem_available_bytes,
    usable_cores,
)
from hpcagents.judge.racecheck import RaceConfig
from hpcagents.judge.timing import BuildConfig, EvalConfig
from hpcagents.spec.kernelspec import Case, KernelSpec, load_kernel


def scripted_variants(kernel: KernelSpec) -> list[Path]:
    """The scripted model's honest answers (those script.yaml marks ``broken`` fail on
    purpose, to exercise repair, and are left out)."""
    script = yaml.safe_load((kernel.directory / "scripted" / "script.yaml").read_text())
    broken = {
        a["file"]
        for s in script.get("strategies", [])
        for a in s.get("answers", [])
        if isinstance(a, dict) and a.get("file") and a.get("broken")
    }
    return sorted(p for p in (kernel.directory / "scripted").glob("*.c") if p.name not in broken)


def doubled(kernel: KernelSpec, case: Case) -> Case:
    return scale.scaled(kernel, case, 2)


#: The judge holds about this many copies of a case's data (inputs, the reference's and the
#: candidate's outputs, poison, fences): node_size's own memory bound assumes as much.
JUDGE_COPIES = 8


def evaluate_at(
    kernel: KernelSpec, source: Path, case: Case, build: BuildConfig, cfg: EvalConfig
) -> dict[str, Any]:
    """The judge's evaluation of ``source`` at ``case``; a case this machine cannot hold
    is skipped with the reason (twice a stencil's size once took the bench past 24 GiB)."""
    need, avail = JUDGE_COPIES * kernel.bytes(case), mem_available_bytes()
    if avail and need > avail:
        why = (
            f"skipped: {case.label()} needs about {need / 2**30:.1f} GiB ({JUDGE_COPIES} x "
            f"its {kernel.bytes(case) / 2**30:.2f} GiB of data), {avail / 2**30:.1f} GiB free"
        )
        return {"status": "skipped", "reason": why, "pct_of_reference": None, "reference": None}
    work = Path(tempfile.mkdtemp(prefix="hpca-node-table-"))
    try:
        sized = dataclasses.replace(cfg, bench_values=tuple(case.values.items()))
        return evaluate_source(kernel, source, work, build, sized)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def size_fields(choice: node_size.BenchChoice) -> dict[str, Any]:
    """The row's account of the chosen size: the case, how it was chosen, the curve."""
    return {
        "chosen": choice.case.label(),
        "chosen_case": dict(choice.case.values),
        "size_record": {k: v for k, v in choice.record.items() if k != "curve"},
        "curve": [
            {"label": p["label"], "ref_gflops": p["ref_gflops"], "ref_gbs": p["ref_gbs"]}
            for p in choice.record.get("curve") or []
        ],
    }


def figures(
    kernel: KernelSpec,
    case: Case,
    at_size: dict[str, Any],
    twice: Case,
    at_twice: dict[str, Any],
    best: str,
    t0: float,
) -> dict[str, Any]:
    """The row's figures: the best's evaluation at the chosen size and at twice it."""
    ref = at_size["reference"]
    ok2 = at_twice["status"] == "ok"
    return {
        "best": best,
        "ref_name": ref["name"],
        "ref_gflops": ref["gflops"],
        "ref_gbs": kernel.bytes(case) / ref["best_s"] / 1e9,
        "pct": at_size["pct_of_reference"],
        "twice": twice.label(),
        "pct_twice": at_twice["pct_of_reference"] if ok2 else None,
        "status_twice": at_twice["status"],
        "reason_twice": "" if ok2 else at_twice["reason"],
        "ref_gflops_twice": (at_twice["reference"] or {}).get("gflops"),
        "wall_s": round(time.monotonic() - t0, 1),
    }


def kernel_row(
    kernel: KernelSpec, results: Path, build: BuildConfig, cfg: EvalConfig, args: argparse.Namespace
) -> dict[str, Any]:
    t0 = time.monotonic()
    settings = node_size.SearchSettings(budget_s=args.search_s)
    choice = node_size.choose(kernel, results / kernel.name, build.cc, build.cflags, cfg, settings)
    row: dict[str, Any] = {"kernel": kernel.name, **size_fields(choice)}
    best: dict[str, Any] | None = None
    tried = []
    # screen every honest variant at kernel.yaml's case (one quick timed call each), then
    # time the best --top of them at the chosen size; the best there is "the best"
    quick = dataclasses.replace(cfg, repeats=1, warmup=0)
    screened = []
    for src in scripted_variants(kernel):
        rec = evaluate_at(kernel, src, kernel.bench, build, quick)
        screened.append((rec["pct_of_reference"] or 0.0, src.stem, src))
        print(f"  {kernel.name:<10} {src.stem:<28} screen {rec['status']:<13}", flush=True)
    for _, stem, src in sorted(screened, reverse=True)[: args.top]:
        rec = evaluate_at(kernel, src, choice.case, build, cfg)
        tried.append({"variant": stem, "status": rec["status"], "pct": rec["pct_of_reference"]})
        print(
            f"  {kernel.name:<10} {stem:<28} {rec['status']:<13} "
            + (f"{rec['pct_of_reference']:.1f}% of ref" if rec["status"] == "ok" else ""),
            flush=True,
        )
        if rec["status"] == "ok" and (
            best is None or rec["pct_of_reference"] > best["pct_of_reference"]
        ):
            best = {**rec, "variant": stem}
    row["variants"] = tried
    if best is None:
        row["best"] = None
        return row
    twice = doubled(kernel, choice.case)
    rec2 = evaluate_at(kernel, Path(best["source"]), twice, build, cfg)
    row.update(figures(kernel, choice.case, best, twice, rec2, best["variant"], t0))
    return row


def suite_row(
    kernel: KernelSpec, suite: Path, build: BuildConfig, cfg: EvalConfig, args: argparse.Namespace
) -> dict[str, Any]:
    """One kernel of a finished suite: its frozen node-sized case, its crowned kernel
    evaluated again at that case and at twice it (fresh, side by side with the reference)."""
    t0 = time.monotonic()
    results = suite / "results"
    summary = json.loads((results / kernel.name / "summary.json").read_text())
    settings = node_size.SearchSettings(budget_s=args.search_s)
    choice = node_size.choose(kernel, results / kernel.name, build.cc, build.cflags, cfg, settings)
    final = summary["final"]
    source = Path(final["source"])
    source = source if source.is_absolute() else suite / source
    row: dict[str, Any] = {
        "kernel": kernel.name,
        **size_fields(choice),
        "campaign": {
            "strategy": final["strategy"],
            "iteration": final["iteration"],
            "gflops": final["gflops"],
            "pct_of_reference": final["pct_of_reference"],
            "pct_of_roofline": final.get("pct_of_roofline"),
            "baseline_gflops": summary["baseline"]["gflops"],
        },
    }
    rec = evaluate_at(kernel, source, choice.case, build, cfg)
    twice = doubled(kernel, choice.case)
    rec2 = evaluate_at(kernel, source, twice, build, cfg)
    for label, r in (("chosen", rec), ("twice", rec2)):
        print(
            f"  {kernel.name:<10} {final['strategy']:<28} at {label}: {r['status']:<13} "
            + (f"{r['pct_of_reference']:.1f}% of ref" if r["status"] == "ok" else r["reason"]),
            flush=True,
        )
    if rec["status"] != "ok":
        row.update(best=None, reason=rec["reason"])
        return row
    best = f"{final['strategy']} (iter {final['iteration']})"
    row.update(figures(kernel, choice.case, rec, twice, rec2, best, t0))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kernels", nargs="*", help="default: every kernel with scripted/")
    parser.add_argument("--dir", default="results/node_table", help="frozen size choices")
    parser.add_argument("--fresh", action="store_true", help="search the sizes again")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--top", type=int, default=3, help="variants timed at the chosen size (after a screen)"
    )
    parser.add_argument("--search-s", type=float, default=60.0)
    parser.add_argument("--cflags", default="-O3 -march=native -fopenmp")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--blas", default="mkl", choices=("mkl", "openblas"))
    parser.add_argument("--out", help="also write the table as JSON here")
    parser.add_argument(
        "--from-suite",
        type=Path,
        help="a finished `hpcagents suite --dir DIR`: its sizes and crowned kernels",
    )
    args = parser.parse_args()
    results = Path(args.dir)
    if args.fresh and results.exists():
        shutil.rmtree(results)
    if args.from_suite:
        args.from_suite = args.from_suite.resolve()
        names = args.kernels or sorted(
            p.parent.name for p in (args.from_suite / "results").glob("*/summary.json")
        )
    else:
        names = args.kernels or sorted(
            p.parent.parent.name for p in (REPO_DIR / "kernels").glob("*/scripted/script.yaml")
        )
    build = BuildConfig(cflags=tuple(args.cflags.split()))
    threads = args.threads or usable_cores()
    # the race check and the extra thread counts judge correctness, which the campaign
    # (or the screen) already did; this table re-times, so they are left out for time
    cfg = EvalConfig(
        repeats=args.repeats,
        warmup=1,
        timeout_s=300,
        blas=args.blas,
        threads=threads,
        race=RaceConfig(enabled=False, thread_counts=False),
    )
    machine = f"{socket.gethostname()}: {cpu_model()}, {usable_cores()} usable cores"
    print(f"[node_table] {machine}; {threads} threads; {' '.join(build.cflags)}", flush=True)
    rows = []
    for name in names:
        if args.from_suite:
            rows.append(suite_row(load_kernel(name), args.from_suite, build, cfg, args))
        else:
            rows.append(kernel_row(load_kernel(name), results, build, cfg, args))
    with tempfile.TemporaryDirectory() as tmp:
        model = machine_model(Path(tmp), build.cc, build.cflags, threads)
    mkl_best = max(
        (
            p["ref_gflops"]
            for r in rows
            if r["kernel"] == "dgemm"
            for p in [
                *r["curve"],
                {"ref_gflops": r.get("ref_gflops") or 0},
                {"ref_gflops": r.get("ref_gflops_twice") or 0},
            ]
        ),
        default=None,
    )
    print()
    what = (
        f"the kernels crowned by the suite in {args.from_suite}"
        if args.from_suite
        else "scripted variants"
    )
    print(f"Node-sized timing on {machine} ({threads} threads); {what} (a stand-in's answers)")
    head = (
        f"{'kernel':<10} {'chosen bench size':<36} {'reference':>20} {'best':<22}"
        f" {'% ref':>6} {'% ref at 2x':>11} {'agree':>6} {'campaign % ref':>14}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if not r.get("best"):
            print(f"{r['kernel']:<10} {r['chosen']:<36} (no valid scripted variant)")
            continue
        figure = f"{r['ref_gflops']:.2f} GF/s {r['ref_gbs']:.1f} GB/s"
        twice = f"{r['pct_twice']:.1f}" if r["pct_twice"] is not None else r["status_twice"]
        agree = f"{abs(r['pct_twice'] / r['pct'] - 1):.0%}" if r["pct_twice"] is not None else "-"
        camp = r.get("campaign", {}).get("pct_of_reference")
        print(
            f"{r['kernel']:<10} {r['chosen']:<36} {figure:>20} {r['best'][:22]:<22}"
            f" {r['pct']:>6.1f} {twice:>11} {agree:>6} {'' if camp is None else f'{camp:.1f}':>14}"
        )
    print()
    for r in rows:
        stop = r["size_record"].get("stop", r["size_record"].get("why", ""))
        curve = ", ".join(
            f"{p['label'].split(' alpha')[0]}: {p['ref_gflops']:.1f}" for p in r["curve"]
        )
        print(f"{r['kernel']}: {r['size_record']['mode']}; {stop}")
        if curve:
            print(f"  reference GFLOP/s by size: {curve}")
    print()
    print(describe(model))  # with the peak's spec cross-check
    if mkl_best:
        print(
            f"MKL's best dgemm here: {mkl_best:.1f} GFLOP/s = "
            f"{100 * mkl_best / model.peak_gflops:.1f}% of the measured peak "
            f"{model.peak_gflops:.1f} GFLOP/s"
        )
    if args.out:
        write_json(
            args.out,
            {
                "machine": machine,
                "threads": threads,
                "rows": rows,
                "model": model.to_dict(),
                "mkl_best_dgemm_gflops": mkl_best,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
