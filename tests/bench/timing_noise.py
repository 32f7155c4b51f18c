"""Benchmark: timing noise of the evaluation (not a test).

For the baseline and the best scripted variant, run the full evaluation (best of
--repeats) --reruns times and print max/min of the reported best time: how much two
evaluations of the same kernel disagree on this machine. Threads are pinned
(OMP_PROC_BIND=close, OMP_PLACES=cores) and one warm-up call precedes timing, as in the
campaign. Usage:

    .venv/bin/python tests/bench/timing_noise.py [--bench-size 512] [--reruns 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from hpcagents.core.artifacts import REPO_DIR
from hpcagents.judge.evaluate import evaluate_source
from hpcagents.judge.timing import BuildConfig, EvalConfig
from hpcagents.spec.kernelspec import load_kernel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench-size", type=int, default=512)
    parser.add_argument("--reruns", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    kernel = load_kernel("dgemm")
    sources = {
        "baseline": kernel.directory / kernel.source,
        "avx512_microkernel": REPO_DIR / "kernels/dgemm/scripted/avx512_microkernel.c",
    }
    cfg = EvalConfig(repeats=args.repeats, warmup=1, bench_size=args.bench_size)
    print(f"timing noise at {args.bench_size}^3, best of {args.repeats}, {args.reruns} reruns")
    print(
        f"{'kernel':<20}{'GFLOP/s min':>12}{'max':>9}{'max/min best_s':>16}"
        f"{'mean in-run spread':>20}{'MKL max/min':>13}"
    )
    for name, src in sources.items():
        bests, spreads, refs = [], [], []
        for _ in range(args.reruns):
            with tempfile.TemporaryDirectory() as tmp:
                rec = evaluate_source(kernel, src, Path(tmp), BuildConfig(), cfg)
            assert rec["status"] == "ok", rec["reason"]
            bests.append(rec["timing"]["best_s"])
            spreads.append(rec["timing"]["spread"])
            refs.append(rec["reference"]["best_s"])
        flops = rec["timing"]["flops"]
        print(
            f"{name:<20}{flops / max(bests) / 1e9:>12.2f}{flops / min(bests) / 1e9:>9.2f}"
            f"{max(bests) / min(bests):>16.3f}{statistics.mean(spreads):>20.3f}"
            f"{max(refs) / min(refs):>13.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
