"""Benchmark: per-attempt overhead of evaluation under the local Slurm (not a test).

Overhead of one attempt = wall time from its source being ready (generation.json
written) to its evaluation being read (the select job that reads it has written
best.json), minus the evaluation's own run time (provenance.wall_s). Measured for the
Snakemake slurm plugin's default polling and for the project's profiles/slurm, side by
side, on the same one-node cluster (tests/slurm/cluster.sh start), with the scripted
model (a stand-in for an LLM) answering. Usage:

    .venv/bin/python tests/bench/slurm_overhead.py [--iterations 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from conftest import campaign_config, write_campaign  # noqa: E402
from hpcagents.artifacts import read_json  # noqa: E402
from hpcagents.scripted import serve  # noqa: E402

POLLING_KEYS = (
    "slurm-init-seconds-before-status-checks",
    "seconds-between-status-checks",
    "max-status-checks-per-second",
)


def profile(root: Path, defaults: bool) -> Path:
    raw = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    if defaults:
        for key in POLLING_KEYS:
            raw.pop(key, None)
    path = root / "profiles" / ("plugin-defaults" if defaults else "project") / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(raw))
    return path.parent


def overheads(workdir: Path, iterations: int) -> list[float]:
    out = []
    for i in range(iterations + 1):
        best = workdir / f"results/dgemm/iter{i}/best.json"
        for cand in read_json(best, "best")["candidates"]:
            ev_path = Path(workdir / cand["evaluation"])
            gen = ev_path.parent / "generation.json"
            ev = read_json(ev_path, "evaluation")
            run_s = (ev["provenance"] or {}).get("wall_s", 0.0)
            out.append(best.stat().st_mtime - gen.stat().st_mtime - run_s)
    return out


def run(
    label: str, prof: Path, root: Path, url: str, iterations: int
) -> tuple[str, list[float], float]:
    workdir = root / label
    raw = campaign_config(url)
    raw["campaign"].update(iterations=iterations, pgs=1, max_repairs=0)
    raw["evaluation"].update(bench_size=128, repeats=3)
    write_campaign(workdir, raw)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        str(prof),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{label}: snakemake failed:\n{proc.stderr[-3000:]}")
    return label, overheads(workdir, iterations), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args()
    subprocess.run(["bash", str(REPO / "tests/slurm/cluster.sh"), "start"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = serve(port=0, log_path=root / "requests.jsonl", latency=0.0)
        try:
            rows = [
                run("plugin-defaults", profile(root, True), root, server.url, args.iterations),
                run("project-profile", profile(root, False), root, server.url, args.iterations),
            ]
        finally:
            server.shutdown()
    print("per-attempt overhead under the local Slurm (s): source ready -> evaluation read,")
    print("minus the evaluation's own run time; scripted model (a stand-in), bench 128^3")
    print(f"{'profile':<18}{'attempts':>9}{'mean':>8}{'median':>8}{'max':>8}{'campaign wall':>15}")
    for label, ov, wall in rows:
        print(
            f"{label:<18}{len(ov):>9}{statistics.mean(ov):>8.1f}{statistics.median(ov):>8.1f}"
            f"{max(ov):>8.1f}{wall:>14.1f}s"
        )
    ratio = statistics.mean(rows[0][1]) / statistics.mean(rows[1][1])
    print(f"plugin defaults / project profile: x{ratio:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
