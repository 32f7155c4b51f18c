"""Benchmark: what the race check and the thread-count validation (issue 25) add to the
wall time of one `hpcagents evaluate` (one attempt). Not a test.

Runs each source alternately with the checks on (the default) and off
(``--no-race-check --no-thread-counts``: the judge as it was before), so both see the same
machine load, and prints the median wall of each, the difference, and the race check's own
seconds from evaluation.json.

    .venv/bin/python tests/bench/racecheck_wall.py [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
SOURCES = (
    ("dgemm", "kernels/dgemm/dgemm.c"),
    ("dgemm", "kernels/dgemm/scripted/packed_b.c"),
    ("stencil3d", "kernels/stencil3d/stencil3d.c"),
    ("stencil3d", "kernels/stencil3d/scripted/omp_planes.c"),
)


def one(kernel: str, source: str, checks: bool) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "evaluation.json"
        cmd = [str(HERE / ".venv/bin/hpcagents"), "evaluate", "--kernel", kernel]
        cmd += ["--source", source, "--out", str(out)]
        if not checks:
            cmd += ["--no-race-check", "--no-thread-counts"]
        t0 = time.monotonic()
        subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, check=True)
        wall = time.monotonic() - t0
        return wall, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(
        "source                          before (s)  after (s)  added (s)  race check (s)"
        "  thread counts (s)"
    )
    for kernel, source in SOURCES:
        before, after, race, counts = [], [], [], []
        for _ in range(args.reps):
            wall, _ = one(kernel, source, False)
            before.append(wall)
            wall, rec = one(kernel, source, True)
            after.append(wall)
            race.append((rec.get("race_check") or {}).get("seconds", 0.0))
            tc = (rec.get("validation") or {}).get("thread_counts") or []
            counts.append(sum(c.get("seconds", 0.0) for c in tc))
        b, a = statistics.median(before), statistics.median(after)
        runs_b = ", ".join(f"{x:.1f}" for x in before)
        runs_a = ", ".join(f"{x:.1f}" for x in after)
        print(
            f"{kernel + '/' + Path(source).name:32s} {b:9.2f}  {a:9.2f}  {a - b:+9.2f}  "
            f"{statistics.median(race):9.2f}  {statistics.median(counts):9.2f}"
            f"   (runs: before {runs_b}; after {runs_a})"
        )


if __name__ == "__main__":
    main()
