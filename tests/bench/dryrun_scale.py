"""Benchmark: a dry run of a big campaign with ALL PGs visible (not a test).

Question: can Snakemake plan K kernels x I iterations x N PGs in reasonable time and
memory (issue target: 20 x 20 x 8 in <= 10 s and <= 400 MB)?

A dry run cannot see past a checkpoint whose output does not exist yet, so a dry run of
a fresh campaign shows only the first iteration. To plan the whole campaign, this script
builds a SYNTHETIC finished state: every attempt 0 of every PG of every iteration has an
``evaluation.json`` saying ``{"status": "ok"}`` (so each PG's chain ends at attempt 0 and
the input functions can walk every checkpoint), and runs ``snakemake -n --forceall``,
which plans every job of the campaign as if it had to run again. Nothing is executed; the
files are not real results and live in a temporary directory only.

The extra kernels are copies of dgemm (dgemm_k01, ...) in the ``kernels/`` of a scratch
copy of this checkout (``git worktree``), never in the checkout itself; not in a
``kernels_dir`` of the campaign, so that ``--rev`` can plan with revisions older than it.

Prints: jobs planned, wall time and peak RSS of the dry run (GNU time), and beside it
Snakemake's own floor: the dry run of a trivial workflow with the same jobs per rule (plain
patterns, no input functions, checkpoints, resources or logs), so the share that is ours
is visible.

    .venv/bin/python tests/bench/dryrun_scale.py [--kernels 20 --iterations 20 --pgs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from conftest import campaign_config, copy_kernel  # noqa: E402


def add_kernel_copies(kernels_dir: Path, count: int) -> list[str]:
    """dgemm plus count-1 renamed copies of it in kernels_dir (the campaign's kernels_dir)."""
    names = ["dgemm"] + [f"dgemm_k{k:02d}" for k in range(1, count)]
    for name in names[1:]:
        copy_kernel(name, kernels_dir)
    return names


def synthetic_state(workdir: Path, kernels: list[str], iterations: int, pgs: int) -> int:
    """An evaluation.json with status ok for attempt 0 of every PG; returns how many."""
    count = 0
    for kernel in kernels:
        for i in range(iterations + 1):
            for j in [0] if i == 0 else range(1, pgs + 1):
                path = workdir / f"results/{kernel}/iter{i}/pg{j}/attempt0/evaluation.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"status": "ok", "synthetic": True}))
                count += 1
    return count


FLOOR = """\
K = config["kernels"]
I = config["iterations"]
N = config["pgs"]
rule all:
    input: expand("r/{k}/summary.json", k=K)
rule summary:
    input: lambda wc: [f"r/{wc.k}/iter{i}/best.json" for i in range(I + 1)]
    output: "r/{k}/summary.json"
    shell: "touch {output}"
rule baseline:
    output: "r/{k}/iter0/pg0/a0/gen.json"
    shell: "touch {output}"
rule plan:
    output: "r/{k}/iter{i}/plan.json"
    shell: "touch {output}"
rule generate:
    input: "r/{k}/iter{i}/plan.json"
    output: "r/{k}/iter{i}/pg{j}/a0/gen.json"
    wildcard_constraints: i="[1-9][0-9]*"
    shell: "touch {output}"
rule evaluate:
    input: "r/{k}/iter{i}/pg{j}/a0/gen.json"
    output: "r/{k}/iter{i}/pg{j}/a0/eval.json"
    shell: "touch {output}"
rule select_baseline:
    input: "r/{k}/iter0/pg0/a0/eval.json"
    output: "r/{k}/iter0/best.json"
    shell: "touch {output}"
rule select:
    input: expand("r/{{k}}/iter{{i}}/pg{j}/a0/eval.json", j=range(1, N + 1))
    output: "r/{k}/iter{i}/best.json"
    wildcard_constraints: i="[1-9][0-9]*"
    shell: "touch {output}"
"""


def floor_command(root: Path, kernels: list[str], iterations: int, pgs: int) -> list[str]:
    """The dry run of FLOOR: the same jobs per rule, with nothing of ours."""
    floor = root / "floor"
    floor.mkdir()
    (floor / "Snakefile").write_text(FLOOR)
    plan = {"kernels": kernels, "iterations": iterations, "pgs": pgs}
    (floor / "config.yaml").write_text(yaml.safe_dump(plan))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(floor / "Snakefile"), "-d", str(floor)]
    return cmd + ["--configfile", str(floor / "config.yaml"), "-n", "--quiet", "rules", "-c1"]


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    return time.monotonic() - start, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kernels", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--pgs", type=int, default=8)
    parser.add_argument("--rev", help="plan with the workflow of this git revision instead")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each, alternated (a shared VM's speed drifts: min and median are shown)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tree = root / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.rev or "HEAD"],
            check=True,
            capture_output=True,
        )
        if not args.rev:  # the working tree's (maybe uncommitted) workflow: measure it
            shutil.rmtree(tree / "workflow")
            shutil.copytree(REPO / "workflow", tree / "workflow")
        try:
            kernels = add_kernel_copies(tree / "kernels", args.kernels)
            workdir = root / "campaign"
            raw = campaign_config("http://127.0.0.1:9/v1")
            raw["kernels"] = kernels
            raw["campaign"].update(iterations=args.iterations, pgs=args.pgs)
            workdir.mkdir()
            (workdir / "config.yaml").write_text(yaml.safe_dump(raw))
            evals = synthetic_state(workdir, kernels, args.iterations, args.pgs)
            cmd = [
                "/usr/bin/time",
                "-f",
                "MAXRSS_KB=%M CPU_S=%U+%S",
                sys.executable,
                "-m",
                "snakemake",
                "--snakefile",
                str(tree / "Snakefile"),
                "--directory",
                str(workdir),
                "--configfile",
                str(workdir / "config.yaml"),
                "-n",
                "--forceall",
                "--quiet",
                "rules",
            ]
            floor_cmd = floor_command(root, kernels, args.iterations, args.pgs)
            walls, floors = [], []
            for _ in range(args.repeat):
                wall, proc = timed(cmd, tree)
                if proc.returncode != 0:
                    break
                walls.append(wall)
                floor, floor_proc = timed(floor_cmd, root)
                floor_proc.check_returncode()
                floors.append(floor)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False
            )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(out[-3000:])
        return 1
    rss = int(re.search(r"MAXRSS_KB=(\d+)", out).group(1)) / 1024
    user, system = re.search(r"CPU_S=([\d.]+)\+([\d.]+)", out).groups()
    total = re.search(r"^total\s+(\d+)", out, flags=re.M)
    per_rule = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^([a-z_]+)\s+(\d+)$", out, flags=re.M)
        if m.group(1) != "total"
    }
    print(
        f"dry run of {args.kernels} kernels x {args.iterations} iterations x {args.pgs} PGs "
        f"(all PGs visible; synthetic finished state: {evals} attempt-0 evaluations 'ok')"
    )
    print(f"jobs planned: {total.group(1) if total else '?'}  {per_rule}")
    print(
        f"wall: min {min(walls):.1f} s, median {statistics.median(walls):.1f} s of {len(walls)}"
        f"   CPU (last run): {float(user) + float(system):.1f} s   peak RSS: {rss:.0f} MB"
        f"   (targets: <= 10 s, <= 400 MB){'   workflow of ' + args.rev if args.rev else ''}"
    )
    print(
        f"Snakemake's floor (same jobs per rule, trivial rules, run alternately): min"
        f" {min(floors):.1f} s, median {statistics.median(floors):.1f} s;"
        f" this workflow / floor (mins) = {min(walls) / min(floors):.2f}"
    )
    print(f"load average when done: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
