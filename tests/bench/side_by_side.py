"""Benchmark: the best kernels of several finished campaigns, re-timed side by side.

Campaigns timed at different moments on a shared machine cannot be compared by their own
figures: each was timed under its own disturbance. This script takes each campaign's
crowned kernel (results/<kernel>/summary.json's final source) and evaluates them in turn,
round after round (the order rotated each round), with the same judge, size, threads and
reference, so every round disturbs them alike. It prints per campaign the best and the
median GFLOP/s over the rounds, the median % of the reference (measured in each of its own
evaluations), and the median per-round time ratio to the first campaign. Not a test.

    .venv/bin/python tests/bench/side_by_side.py --kernel dgemm --rounds 3 DIR_A DIR_B
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from hpcagents.judge.evaluate import BuildConfig, EvalConfig, evaluate_source
from hpcagents.judge.machine import cpu_model, usable_cores
from hpcagents.judge.racecheck import RaceConfig
from hpcagents.spec.kernelspec import load_kernel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bench-size", default=None, help="an integer; default kernel.yaml's")
    parser.add_argument("--cflags", default="-O3 -march=native -fopenmp")
    parser.add_argument("--out", help="also write the rounds as JSON here")
    parser.add_argument("campaigns", nargs="+", type=Path)
    args = parser.parse_args()
    kernel = load_kernel(args.kernel)
    sources = {}
    for d in args.campaigns:
        summary = json.loads((d / "results" / args.kernel / "summary.json").read_text())
        src = Path(summary["final"]["source"])
        sources[d.name] = (src if src.is_absolute() else d / src, summary["final"])
    build = BuildConfig(cflags=tuple(args.cflags.split()))
    cfg = EvalConfig(
        repeats=args.repeats,
        warmup=1,
        bench_size=int(args.bench_size) if args.bench_size else None,
        race=RaceConfig(enabled=False, thread_counts=False),
    )
    names = list(sources)
    rounds: list[dict[str, dict]] = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        got = {}
        for name in order:
            work = Path(tempfile.mkdtemp(prefix="hpca-sbs-"))
            try:
                rec = evaluate_source(kernel, sources[name][0], work, build, cfg)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            got[name] = {
                "status": rec["status"],
                "best_s": (rec.get("timing") or {}).get("best_s"),
                "gflops": (rec.get("timing") or {}).get("gflops"),
                "pct_of_reference": rec.get("pct_of_reference"),
                "reference_gflops": (rec.get("reference") or {}).get("gflops"),
            }
            print(f"round {r + 1} {name}: {got[name]}", flush=True)
        rounds.append(got)
    base = names[0]
    print(
        f"\n{args.kernel} on {cpu_model()} ({usable_cores()} cores), {args.rounds} rounds, "
        f"order rotated each round"
    )
    print(
        f"{'campaign':<12} {'strategy':<40} {'best GF/s':>9} {'median GF/s':>11} "
        f"{'median % ref':>12} {'time / ' + base:>14}"
    )
    for name in names:
        ok = [g[name] for g in rounds if g[name]["status"] == "ok"]
        if not ok:
            print(f"{name:<12} (no valid round)")
            continue
        ratios = [
            g[name]["best_s"] / g[base]["best_s"]
            for g in rounds
            if g[name]["status"] == "ok" and g[base]["status"] == "ok"
        ]
        print(
            f"{name:<12} {sources[name][1]['strategy'][:40]:<40} "
            f"{max(x['gflops'] for x in ok):>9.2f} "
            f"{statistics.median(x['gflops'] for x in ok):>11.2f} "
            f"{statistics.median(x['pct_of_reference'] for x in ok):>12.1f} "
            f"{statistics.median(ratios) if ratios else float('nan'):>14.3f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"kernel": args.kernel, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
