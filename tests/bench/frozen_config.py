"""What a job saves by reading the run's frozen record instead of validating again.

Every step of a campaign loads its config and kernel spec. Before issue 21 each job read
the config file (YAML, JSON Schema, folder and server checks) and kernel.yaml (YAML,
schema, blanks); now it reads the effective record written once at the start (JSON,
no schema pass, the kernel spec from its snapshot). Prints the median of both, per job.

    .venv/bin/python tests/bench/frozen_config.py [--kernel dgemm] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "workflow"))

from hpcagents.core.layout import CampaignLayout  # noqa: E402
from hpcagents.spec.config import load_config  # noqa: E402
from hpcagents.spec.effective import load_step_config, write_effective_config  # noqa: E402
from hpcagents.spec.kernelspec import load_kernel  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm: imports, schema registry, caches
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="dgemm")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["kernels"] = [args.kernel]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        effective = write_effective_config(load_config(path), CampaignLayout(Path(tmp)))

        def before() -> None:  # what every job did
            cfg = load_config(path)
            load_kernel(args.kernel, cfg.kernel_search)

        def after() -> None:  # what every job does now
            load_step_config(effective).kernel(args.kernel)

        old, new = median_ms(before, args.repeats), median_ms(after, args.repeats)
    print(f"kernel {args.kernel}, median of {args.repeats} loads (config + kernel spec), per job:")
    print(f"  validate again (config file + kernel.yaml): {old:8.2f} ms")
    print(f"  frozen effective record:                    {new:8.2f} ms")
    print(f"  saved per job: {old - new:.2f} ms ({old / new:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
