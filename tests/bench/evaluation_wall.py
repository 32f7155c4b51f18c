"""Benchmark: wall time of one `hpcagents evaluate` (one attempt), this tree vs another.

Runs the two trees alternately on the same sources (so both see the same machine load)
and prints the median wall time and candidate GFLOP/s of each. Not a test.

    .venv/bin/python tests/bench/evaluation_wall.py --other /work/main [--reps 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
SOURCES = (
    "kernels/dgemm/dgemm.c",
    "kernels/dgemm/scripted/packed_b.c",
    "kernels/dgemm/scripted/loop_reorder.c",
)


def one(tree: Path, source: str) -> tuple[float, float]:
    t0 = time.monotonic()
    out = subprocess.run(
        [str(tree / ".venv/bin/hpcagents"), "evaluate", "--kernel", "dgemm", "--source", source],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wall = time.monotonic() - t0
    m = re.search(r"candidate: ([\d.]+) GFLOP/s", out)
    return wall, float(m.group(1)) if m else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--other", required=True, help="the other checkout (with its .venv)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    trees = {"this": HERE, "other": Path(args.other).resolve()}
    for source in SOURCES:
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
        for _ in range(args.reps):
            for name, tree in trees.items():
                res[name].append(one(tree, source))
        for name, runs in res.items():
            walls = [w for w, _ in runs]
            gflops = [g for _, g in runs]
            print(
                f"{Path(source).name:18s} {name:5s} wall median {statistics.median(walls):6.2f} s "
                f"(min {min(walls):.2f})  candidate {statistics.median(gflops):7.2f} GFLOP/s"
            )


if __name__ == "__main__":
    main()
