"""Benchmark: what Slurm costs a campaign, against the same campaign run locally (not a test).

Runs one campaign (scripted model, a stand-in for an LLM, with a fixed latency) three
ways on the one-node test Slurm (``HPCA_SLURM_NODES=1 bash tests/slurm/cluster.sh start``:
the profile's pilot asks for 2 CPUs; tests/bench/cluster_scaling.py measures several nodes):

- ``local``   the local executor (the reference wall time);
- ``after``   ``--workflow-profile slurm`` of this checkout (the evaluation pilot);
- ``before``  optional (``--before REV``): the same profile at another git revision,
              run from a temporary worktree with its own package first on PYTHONPATH.

and prints, per Slurm run: Slurm jobs submitted (counted by the job-id counter, with a
held sentinel job before and after), wall time, Slurm wall / local wall, and the
per-attempt overhead amortised over the campaign, (Slurm wall - local wall) / timed
steps, where timed steps = evaluations + final rounds. Usage:

    .venv/bin/python tests/bench/slurm_overhead.py [--iterations 2 --pgs 4]
        [--before 1f47c57]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from conftest import campaign_config, write_campaign  # noqa: E402
from hpcagents.scripted import serve  # noqa: E402


@dataclass
class Run:
    label: str
    wall_s: float
    jobs: int | None
    timed_steps: int


def sentinel() -> int:
    """Submit and cancel a held no-op job; its id tells how many jobs came before."""
    out = subprocess.run(
        ["sbatch", "--parsable", "-H", "--job-name=bench-sentinel", "--wrap", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    job = out.split(";")[0]
    subprocess.run(["scancel", job], check=True)
    return int(job)


def run(label: str, repo: Path, root: Path, url: str, args, slurm: bool) -> Run:
    workdir = root / label
    raw = campaign_config(url)
    raw["campaign"].update(iterations=args.iterations, pgs=args.pgs)
    raw["evaluation"].update(bench_size=args.bench_size)
    write_campaign(workdir, raw)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
    ]
    cmd += ["--workflow-profile", str(repo / "profiles/slurm")] if slurm else []
    env = dict(os.environ, PYTHONPATH=str(repo / "workflow"))
    first = sentinel() if slurm else None
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    jobs = sentinel() - first - 1 if slurm else None
    if proc.returncode != 0:
        sys.exit(f"{label}: snakemake failed:\n{proc.stderr[-3000:]}")
    evals = len(list(workdir.glob("results/dgemm/iter*/pg*/attempt*/evaluation.json")))
    rounds = len(list(workdir.glob("results/dgemm/iter*/final_round.json")))
    return Run(label, wall, jobs, evals + rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--pgs", type=int, default=4)
    parser.add_argument("--bench-size", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.2, help="scripted model latency")
    parser.add_argument("--before", help="git revision to compare with (e.g. 1f47c57)")
    args = parser.parse_args()
    subprocess.run(["bash", str(REPO / "tests/slurm/cluster.sh"), "start"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = serve(port=0, log_path=root / "requests.jsonl", latency=args.latency)
        try:
            rows = [run("local", REPO, root, server.url, args, slurm=False)]
            if args.before:
                tree = root / "before-tree"
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.before],
                    check=True,
                    capture_output=True,
                )
                try:
                    rows.append(run(f"before {args.before}", tree, root, server.url, args, True))
                finally:
                    subprocess.run(
                        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                        check=False,
                    )
            rows.append(run("after (pilot)", REPO, root, server.url, args, slurm=True))
        finally:
            server.shutdown()
    local = rows[0]
    print(
        f"campaign: {args.iterations} iterations x {args.pgs} PGs, bench {args.bench_size}^3, "
        f"scripted model (a stand-in) at {args.latency} s latency, one-node test Slurm"
    )
    print(
        f"{'run':<18}{'wall s':>8}{'x local':>9}{'Slurm jobs':>12}{'timed steps':>13}"
        f"{'overhead/step s':>17}"
    )
    for r in rows:
        over = (r.wall_s - local.wall_s) / r.timed_steps if r.jobs is not None else 0.0
        print(
            f"{r.label:<18}{r.wall_s:>8.1f}{r.wall_s / local.wall_s:>9.2f}"
            f"{'-' if r.jobs is None else r.jobs:>12}{r.timed_steps:>13}{over:>17.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
