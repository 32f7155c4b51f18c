"""Benchmark: wall time of one `hpcagents evaluate` (one attempt), this tree vs another.

Runs the two trees alternately on the same sources (so both see the same machine load)
and prints, per source, the median wall time, candidate GFLOP/s and the ratio this/other
of each pair. Both trees run with this interpreter (PYTHONPATH set to each tree's
package), so the other tree needs no venv of its own, e.g. an older revision from
`git worktree add --detach ../before REV`. Not a test.

    .venv/bin/python tests/bench/evaluation_wall.py --other ../before [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
SOURCES = (
    ("dgemm", "kernels/dgemm/dgemm.c"),
    ("dgemm", "kernels/dgemm/scripted/packed_b.c"),
    ("stencil3d", "kernels/stencil3d/stencil3d.c"),
    ("stencil3d", "kernels/stencil3d/scripted/omp_planes.c"),
)


def one(tree: Path, kernel: str, source: str, extra: list[str]) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "workflow")}
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "hpcagents", "evaluate", "--kernel", kernel, "--source", source]
        + extra,
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wall = time.monotonic() - t0
    m = re.search(r"candidate: ([\d.]+) GFLOP/s", out)
    return wall, float(m.group(1)) if m else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--other", required=True, help="the other checkout")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bench-size", type=int, help="passed to both (default: kernel.yaml's)")
    parser.add_argument(
        "--this-args",
        default="",
        help="extra evaluate options for this tree only, e.g. "
        "'--no-race-check --no-thread-counts' to time the judge without the added checks",
    )
    args = parser.parse_args()
    extra = ["--bench-size", str(args.bench_size)] if args.bench_size else []
    trees = {"this": HERE, "other": Path(args.other).resolve()}
    for kernel, source in SOURCES:
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
        for _ in range(args.reps):
            for name, tree in trees.items():
                more = args.this_args.split() if name == "this" else []
                res[name].append(one(tree, kernel, source, extra + more))
        ratios = [a[0] / b[0] for a, b in zip(res["this"], res["other"], strict=True)]
        for name, runs in res.items():
            walls = [w for w, _ in runs]
            gflops = [g for _, g in runs]
            print(
                f"{Path(source).name:18s} {name:5s} wall median {statistics.median(walls):6.2f} s "
                f"(min {min(walls):.2f})  candidate {statistics.median(gflops):7.2f} GFLOP/s"
            )
        print(
            f"{Path(source).name:18s} this/other wall, pair by pair: median "
            f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
