"""What the compiler's vectorisation report costs per evaluation: the second, sandboxed
compile (hpcagents.judge.optreport) beside the judge's own build of the same candidate.

Prints a table; asserts nothing (a benchmark, not a test). For every scripted variant of
the kernels named (real gcc, bubblewrap, the campaign's default flags), each build is
run ``--repeats`` times, alternating, and the median wall is shown:

* build    -- hpcagents.judge.build.build_candidate: the sandboxed compile + screens + link
              of the timed object (what every evaluation pays already)
* report   -- hpcagents.judge.optreport.optimisation_report: the second compile, -S to nothing
* extra    -- report / build

    .venv/bin/python tests/bench/optreport_cost.py [--kernels dgemm,stencil3d] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))

from hpcagents.judge.build import build_candidate  # noqa: E402
from hpcagents.judge.optreport import optimisation_report  # noqa: E402
from hpcagents.spec.kernelspec import load_kernel  # noqa: E402

FLAGS = ("-O3", "-march=native", "-fopenmp")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default="dgemm,stencil3d")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'kernel/variant':44} {'build s':>8} {'report s':>9} {'extra':>6} {'loops':>6}")
    ratios, extras = [], []
    for name in args.kernels.split(","):
        kernel = load_kernel(name)
        variants = sorted((kernel.directory / "scripted").glob("*.c"))
        for src in [kernel.directory / kernel.source, *variants]:
            code = src.read_text()
            build_s, report_s, loops, ok = [], [], 0, True
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory(prefix="hpca-optcost-") as tmp:
                    t0 = time.monotonic()
                    built = build_candidate(kernel, src, Path(tmp) / "b", "gcc", FLAGS)
                    build_s.append(time.monotonic() - t0)
                    if not built.ok:
                        ok = False
                        break
                    t0 = time.monotonic()
                    rec = optimisation_report(
                        kernel.source, code, kernel.signature, Path(tmp) / "r", "gcc", FLAGS
                    )
                    report_s.append(time.monotonic() - t0)
                    loops = len(rec["loops"])
            label = f"{name}/{src.name}"
            if not ok:
                print(f"{label:44} {'(does not compile: no report)':>30}")
                continue
            b, r = statistics.median(build_s), statistics.median(report_s)
            ratios.append(r / b)
            extras.append(r)
            print(f"{label:44} {b:8.3f} {r:9.3f} {r / b:6.2f} {loops:6d}")
    if extras:
        print(
            f"\nsecond compile: median {statistics.median(extras):.3f} s per evaluation "
            f"(max {max(extras):.3f} s), {statistics.median(ratios):.2f}x the judge's build"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
