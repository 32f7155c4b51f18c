"""Whole campaigns at N = 1, 2, 4, 8 PGs over 1, 2 and 4 servers: are the PGs parallel?

Prints a table; asserts nothing (a benchmark, not a test). Each row is ONE real campaign
(Snakemake, gcc, MKL, the local executor with the default profile) of one iteration
after the baseline, answered by the scripted model (a STAND-IN for an LLM: it measures
the pipeline, never a model) at a fixed latency per request. Figures come from the
campaign's own summary.json (hpcagents.views.timeline):

* wall / crit  -- iteration 1's wall time over its critical path (plan + the slowest PG's
                  generate/evaluate chain + final round + select): what scheduling and
                  the shared resources (the one local timing slot, LLM slots) cost.
* wall / N=1   -- iteration 1's wall time over that of N = 1 with the same servers.

Targets (issue "N programmers at once"): wall / crit <= 1.15; N=8 over 4 servers <= 1.3x
N=1. ``max_repairs`` is 0 so that every N has the same chain (one generate, one evaluate):
repairs add a second round trip to the critical path by design, which is not what is
measured here.

    .venv/bin/python tests/bench/campaign_scaling.py [--latency 20] [--pgs 1,2,4,8]
        [--servers 1,2,4] [--per-token 0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import campaign_config, snakemake_cmd, write_campaign  # noqa: E402
from hpcagents.core.artifacts import read_json  # noqa: E402
from hpcagents.scripted import serve  # noqa: E402


def run_one(root: Path, urls: list[str], n: int, args: argparse.Namespace) -> dict:
    workdir = root / f"S{len(urls)}-N{n}"
    raw = campaign_config(urls[0])
    raw["campaign"].update(iterations=1, pgs=n, max_repairs=0)
    raw["evaluation"].update(bench_size=args.bench_size, repeats=3, warmup=1)
    raw["llm"]["servers"] = [
        {
            "name": f"s{k}",
            "base_url": url,
            "model": "scripted-stand-in",
            "max_concurrency": 8,
            "timeout_s": 600,
        }
        for k, url in enumerate(urls)
    ]
    write_campaign(workdir, raw)
    start = time.monotonic()
    proc = subprocess.run(snakemake_cmd(workdir), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"campaign {workdir} failed:\n{proc.stderr[-3000:]}")
    summary = read_json(workdir / "results" / "dgemm" / "summary.json", "summary")
    row = summary["rows"][1]
    row["campaign_s"] = time.monotonic() - start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=20.0, help="seconds per request")
    parser.add_argument("--per-token", type=float, default=0.0, help="extra s per token")
    parser.add_argument("--pgs", default="1,2,4,8")
    parser.add_argument("--servers", default="1,2,4")
    parser.add_argument("--bench-size", type=int, default=128)
    args = parser.parse_args()
    pgs = [int(x) for x in args.pgs.split(",")]
    server_counts = [int(x) for x in args.servers.split(",")]
    print(
        f"scripted model (a stand-in for an LLM) at {args.latency:g} s per request"
        + (f" + {args.per_token:g} s per token" if args.per_token else "")
        + f"; dgemm at {args.bench_size}^3; 1 iteration; max_repairs 0; local executor",
        flush=True,
    )
    head = (
        f"{'servers':>7} {'N':>3} {'wall s':>7} {'crit s':>7} {'wall/crit':>9} "
        f"{'wall/N=1':>8} {'in flight max/mean':>18} {'busy fraction per server':<30}"
    )
    print(head)
    print("-" * len(head), flush=True)
    with tempfile.TemporaryDirectory(prefix="hpca-scaling-") as tmp:
        root = Path(tmp)
        for s in server_counts:
            servers = [
                serve(
                    host="127.0.0.1",
                    port=0,
                    latency=args.latency,
                    latency_per_token=args.per_token,
                )
                for _ in range(s)
            ]
            try:
                base = None
                for n in pgs:
                    row = run_one(root, [srv.url for srv in servers], n, args)
                    base = base or row["wall_s"]
                    busy = " ".join(f"{v:.2f}" for v in row["server_busy_fraction"].values())
                    print(
                        f"{s:>7} {n:>3} {row['wall_s']:>7.1f} {row['critical_path_s']:>7.1f} "
                        f"{row['wall_over_critical']:>9.3f} {row['wall_s'] / base:>8.3f} "
                        f"{row['llm_inflight_max']:>9} / {row['llm_inflight_mean']:<6.2f} "
                        f"{busy:<30}",
                        flush=True,
                    )
            finally:
                for srv in servers:
                    srv.shutdown()
    print(yaml.safe_dump({"note": "answers from the scripted stand-in, not an LLM"}), end="")


if __name__ == "__main__":
    main()
