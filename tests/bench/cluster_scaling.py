"""Benchmark: a campaign as wide as the cluster, on 1, 2, 4 ... timing nodes (not a test).

Runs ONE campaign (default 6 kernels x 4 PGs x 2 iterations; the scripted model, a
stand-in for an LLM, answering at a fixed latency) through the Slurm workflow profile on
the multi-node test cluster (tests/slurm/cluster.sh, started here with as many nodes as
the largest pool asks for), once per pool size ``max_timing_nodes`` in --nodes, and
prints per run: wall time, evaluations and timed steps (evaluations + final rounds) per
minute, the pool's node busy fraction (time the pilots spent running steps / (nodes x
wall)), the most pilots seen running at once, and the ratios to the 1-node run. It also
prints the squeue lines of the moment the largest run held the most nodes.

Then (--dry-run-kernels, default 20) the same campaign planned at 20 kernels x 8 PGs with
64 timing nodes in a Snakemake dry run: jobs, DAG time, peak memory (tests/bench/
dryrun_scale.py's synthetic finished state, so every iteration is visible).

The test cluster's nodes share this machine: node i is pinned to its own nproc/K cores,
so on 2 cores only 2 nodes are real; run it on a machine with 16 cores for 4 nodes:

    .venv/bin/python tests/bench/cluster_scaling.py                  # 1, 2 nodes here
    .venv/bin/python tests/bench/cluster_scaling.py --nodes 1,2,4    # 4 nodes x 4 cores

Runs as root (it (re)starts the test cluster, and stops it at the end with --stop).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "bench"))

from conftest import campaign_config, write_campaign  # noqa: E402
from hpcagents.scripted import serve  # noqa: E402

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
KERNELS = ["dgemm", "dgemv", "dsyrk", "nbody", "spmv_csr", "stencil3d"]


def start_cluster(nodes: int, cpus: int | None = None) -> list[tuple[str, int]]:
    env = dict(os.environ, HPCA_SLURM_NODES=str(nodes))
    if cpus:
        env["HPCA_SLURM_CPUS"] = str(cpus)
    subprocess.run(["bash", str(CLUSTER), "start"], check=True, env=env)
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %c"], capture_output=True, text=True
    ).stdout
    return sorted({(n, int(c)) for n, c in (line.split() for line in out.splitlines())})


def profile(where: Path, cpus: int, max_nodes: int, llm_slots: int) -> Path:
    """profiles/slurm with its EDIT lines set for the test cluster and this pool size."""
    raw = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    node = raw["set-resources"]["evaluate"]
    node.update(cpus_per_task=cpus, max_timing_nodes=max_nodes, pilot_idle_s=60)
    raw["set-resources"]["select"] = node
    raw["resources"] = [f"llm_slots={llm_slots}", "timing_slots=1"]
    path = where / f"profile-{max_nodes}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(raw))
    return path


class Squeue(threading.Thread):
    """Samples squeue every second; keeps the snapshot with the most pilots running."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(daemon=True)
        self.workdir, self.best, self.most = str(workdir), "", 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            out = subprocess.run(
                ["squeue", "-o", "%.6i %.9P %.22j %.2t %.8M %.5D %R %Z"],
                capture_output=True,
                text=True,
            ).stdout
            lines = [ln for ln in out.splitlines()[1:] if ln.endswith(self.workdir)]
            running = [ln for ln in lines if " R " in ln and "hpcagents-pilot" in ln]
            if len(running) > self.most:
                self.most = len(running)
                self.best = "\n".join([out.splitlines()[0], *lines])


def run_campaign(root: Path, url: str, args, max_nodes: int, cpus: int) -> dict:
    workdir = root / f"campaign-{max_nodes}"
    raw = campaign_config(url)
    raw["kernels"] = KERNELS[: args.kernels]
    raw["campaign"].update(iterations=args.iterations, pgs=args.pgs)
    raw["evaluation"].update(bench_size=args.bench_size)
    raw["llm"]["servers"][0]["max_concurrency"] = 64
    write_campaign(workdir, raw)
    prof = profile(root, cpus, max_nodes, llm_slots=64)
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", str(prof)]
    cmd += ["--directory", str(workdir), "--configfile", str(workdir / "config.yaml")]
    watch = Squeue(workdir)
    watch.start()
    start, started_at = time.monotonic(), time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - start
    watch.halt.set()
    watch.join()
    if proc.returncode != 0:
        sys.exit(f"campaign with {max_nodes} nodes failed:\n{proc.stderr[-3000:]}")
    evals = len(list(workdir.glob("results/*/iter*/pg*/attempt*/evaluation.json")))
    rounds = len(list(workdir.glob("results/*/iter*/final_round.json")))
    busy_path = workdir / "results/.hpcagents/pilot/busy.jsonl"
    spans = [json.loads(line) for line in busy_path.read_text().splitlines()]
    busy = sum(s["end"] - s["start"] for s in spans)
    nodes_used = sorted({s["node"] for s in spans})
    if args.keep:
        keep = args.keep / f"nodes-{max_nodes}"
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "busy.jsonl").write_text(busy_path.read_text())
        (keep / "snakemake.log").write_text(proc.stderr)
        (keep / "steps.json").write_text(json.dumps(step_times(workdir), indent=0))
    return {
        "nodes": max_nodes,
        "wall_s": wall,
        "evals": evals,
        "steps": evals + rounds,
        "evals_per_min": evals / wall * 60,
        "steps_per_min": (evals + rounds) / wall * 60,
        "busy": busy / (max_nodes * wall),
        "step_s": busy / max(len(spans), 1),
        "nodes_used": nodes_used,
        "most_running": watch.most,
        "squeue": watch.best,
        "idle": idle_split(spans, max_nodes, started_at, started_at + wall),
    }


def step_times(workdir: Path) -> list[dict]:
    """Every artifact's own start and end (its "step" record), for a timeline offline."""
    out = []
    for path in sorted((workdir / "results").rglob("*.json")):
        try:
            step = json.loads(path.read_text()).get("step")
        except (ValueError, AttributeError, OSError):
            continue
        if isinstance(step, dict) and step.get("started_at"):
            rel = str(path.relative_to(workdir / "results"))
            out.append({"artifact": rel, "start": step["started_at"], "end": step.get("ended_at")})
    return out


def idle_split(spans: list[dict], nodes: int, t0: float, t1: float, dt: float = 0.05) -> dict:
    """Where the pool's idle node-seconds went: before the first timed step was queued
    (Snakemake's start, the first LLM steps), while a step WAITED for a node (hand-over,
    pilot start), while NOTHING was queued (the DAG had no timing work ready: LLM steps,
    selection, Snakemake's own latency), and after the last step (summaries, reports)."""
    first_q = min((s.get("queued") or s["start"]) for s in spans)
    last_end = max(s["end"] for s in spans)
    split = {"start": 0.0, "waiting": 0.0, "starved": 0.0, "end": 0.0}
    t = t0
    while t < t1:
        busy = sum(1 for s in spans if s["start"] <= t < s["end"])
        waiting = sum(1 for s in spans if (s.get("queued") or s["start"]) <= t < s["start"])
        idle = max(0, nodes - busy)
        if t < first_q:
            split["start"] += idle * dt
        elif t >= last_end:
            split["end"] += idle * dt
        else:
            split["waiting"] += min(idle, waiting) * dt
            split["starved"] += (idle - min(idle, waiting)) * dt
        t += dt
    waits = [s["start"] - s["queued"] for s in spans if s.get("queued")]
    split["queue_wait_mean_s"] = sum(waits) / len(waits) if waits else 0.0
    return split


def dry_run(kernels: int, pgs: int, iterations: int, nodes: int) -> str:
    """The campaign planned at scale with a pool of ``nodes`` (dryrun_scale's synthetic
    finished state, the Slurm profile with max_timing_nodes = nodes)."""
    from dryrun_scale import add_kernel_copies, synthetic_state

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kdir = root / "kernels"
        kdir.mkdir()
        names = add_kernel_copies(kdir, kernels)
        workdir = root / "campaign"
        raw = campaign_config("http://127.0.0.1:9/v1")
        raw["kernels"], raw["kernels_dir"] = names, str(kdir)
        raw["campaign"].update(iterations=iterations, pgs=pgs)
        write_campaign(workdir, raw)
        synthetic_state(workdir, names, iterations, pgs)
        prof = profile(root, 1, nodes, llm_slots=64)
        cmd = ["/usr/bin/time", "-f", "MAXRSS_KB=%M", sys.executable, "-m", "snakemake"]
        cmd += ["--workflow-profile", str(prof), "--directory", str(workdir)]
        cmd += ["--configfile", str(workdir / "config.yaml"), "-n", "--forceall"]
        cmd += ["--quiet", "rules"]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return f"dry run failed:\n{out[-3000:]}"
    rss = int(re.search(r"MAXRSS_KB=(\d+)", out).group(1)) / 1024
    total = re.search(r"^total\s+(\d+)", out, flags=re.M)
    per_rule = dict(re.findall(r"^(evaluate|select|generate|plan)\s+(\d+)$", out, flags=re.M))
    return (
        f"dry run {kernels} kernels x {pgs} PGs x {iterations} iterations, "
        f"max_timing_nodes={nodes}: {total.group(1) if total else '?'} jobs "
        f"({', '.join(f'{k} {v}' for k, v in per_rule.items())}), DAG + plan "
        f"{wall:.1f} s wall, peak RSS {rss:.0f} MB"
    )


def _wait_jobs(jobs: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-j", ",".join(jobs), "-o", "%T"], capture_output=True, text=True
        ).stdout.split()
        if all(state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") for state in out):
            return
        time.sleep(0.2)


def mechanisms(nodes: int, steps: int, blocker_s: int) -> None:
    """The ways Slurm offers to give K nodes to many short exclusive steps, measured on
    the test cluster with ``steps`` no-op steps (a step's cost is then all overhead), once
    on an idle cluster and once with another user's job holding one node for blocker_s:

    - pilot pool: hpcagents.cluster.pilot's hand-over to up to K one-node pilots;
    - one K-node allocation, one ``srun -N1 -n1 --exclusive`` step per evaluation;
    - a job array, one element (one Slurm job) per evaluation.
    """
    from concurrent.futures import ThreadPoolExecutor

    from hpcagents.cluster.pilot import Paths, PilotResources, hand_over, stop

    def pool(root: Path) -> float:
        paths = Paths(root / "pilot")
        res = PilotResources(extra=("--exclusive",), max_nodes=nodes, idle_s=5)
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=steps) as pool_:
            list(pool_.map(lambda _: hand_over(paths, ["true"], res, poll_s=0.05), range(steps)))
        wall = time.monotonic() - start
        stop(paths.root)
        return wall

    def allocation(root: Path) -> float:
        script = root / "steps.sh"
        script.write_text(
            f"#!/bin/bash\nfor i in $(seq {steps}); do srun -N1 -n1 --exclusive true & done; wait\n"
        )
        start = time.monotonic()
        job = subprocess.run(
            [
                "sbatch",
                "--parsable",
                f"-N{nodes}",
                "--exclusive",
                f"-o{root}/alloc.out",
                str(script),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        _wait_jobs([job])
        return time.monotonic() - start

    def array(root: Path) -> float:
        start = time.monotonic()
        job = subprocess.run(
            ["sbatch", "--parsable", f"--array=1-{steps}", "--exclusive", "-o/dev/null"]
            + ["--wrap", "true"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        _wait_jobs([job])
        return time.monotonic() - start

    print(f"\nmechanisms: {steps} no-op exclusive steps over {nodes} nodes (wall, s)")
    print(f"                                  idle cluster   one node busy for {blocker_s} s")
    for name, fn in (
        ("pilot pool (hpcagents)", pool),
        ("one K-node allocation + srun", allocation),
        ("job array", array),
    ):
        walls = []
        for blocked in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                blocker = None
                if blocked:
                    blocker = subprocess.run(
                        ["sbatch", "--parsable", "-w", "n1", "--exclusive", "-o/dev/null"]
                        + ["--wrap", f"sleep {blocker_s}"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout.strip()
                    time.sleep(3)
                walls.append(fn(Path(tmp)))
                if blocker:
                    subprocess.run(["scancel", blocker], check=False)
                    _wait_jobs([blocker])
        print(f"  {name:32s}{walls[0]:10.1f}   {walls[1]:10.1f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default=None, help="pool sizes (default 1,2 or 1,2,4)")
    parser.add_argument("--kernels", type=int, default=6)
    parser.add_argument("--pgs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--latency", type=float, default=1.0, help="scripted model latency")
    parser.add_argument("--bench-size", type=int, default=256)
    parser.add_argument("--dry-run-kernels", type=int, default=20)
    parser.add_argument("--dry-run-pgs", type=int, default=8)
    parser.add_argument("--dry-run-nodes", type=int, default=64)
    parser.add_argument("--stop", action="store_true", help="stop the test cluster at the end")
    parser.add_argument(
        "--rows",
        type=Path,
        help="keep each run's row in this JSON-lines file and print the table of all rows in "
        "it (split the sizes over several calls: --nodes 1 --rows F, then --nodes 2,4 --rows F)",
    )
    parser.add_argument(
        "--cluster-nodes",
        type=int,
        help="nodes of the test cluster (default: the largest pool size); with --rows over "
        "several calls, give every call the same so every node has as many CPUs each time",
    )
    parser.add_argument("--no-dry-run", action="store_true")
    parser.add_argument(
        "--login-cores",
        type=int,
        default=None,
        help="cores kept for the login-node side (Snakemake, LLM steps, the scripted model), "
        "never given to a test node; default: a quarter of the cores where there are 8 or "
        "more, else none (2 cores cannot spare one)",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep each run's busy.jsonl, Snakemake log, step times here"
    )
    parser.add_argument(
        "--mechanisms",
        type=int,
        default=0,
        metavar="STEPS",
        help="only compare pilot pool / K-node allocation + srun / job array on STEPS no-op steps",
    )
    args = parser.parse_args()
    ncpu = os.cpu_count() or 1
    sizes = [int(n) for n in (args.nodes or ("1,2,4" if ncpu >= 8 else "1,2")).split(",")]
    k = args.cluster_nodes or max(sizes)
    login = args.login_cores if args.login_cores is not None else (ncpu // 4 if ncpu >= 8 else 0)
    per_node = (ncpu - login) // k if login else None
    cluster = start_cluster(k, per_node)
    cpus = cluster[0][1]
    if login:
        # This process, the scripted model it serves and Snakemake with every local step
        # run on the login cores only: the test nodes' cores time, nothing else.
        os.sched_setaffinity(0, set(range(k * cpus, ncpu)))
    if args.mechanisms:
        mechanisms(len(cluster), args.mechanisms, blocker_s=30)
        return 0
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        "?",
    )
    print(
        f"machine: {ncpu} cores, {cpu}; test cluster: {len(cluster)} nodes x {cpus} CPUs; "
        f"login side: {f'cores {k * cpus}-{ncpu - 1}' if login else 'shares the nodes'}; "
        f"campaign: {args.kernels} kernels x {args.pgs} PGs x {args.iterations} iterations, "
        f"bench_size {args.bench_size}, scripted model (a stand-in for an LLM) at "
        f"{args.latency} s per request",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = serve(port=0, log_path=root / "requests.jsonl", latency=args.latency)
        try:
            for n in sizes:
                rows.append(run_campaign(root, server.url, args, n, cpus))
                r = rows[-1]
                if args.rows:
                    with open(args.rows, "a") as fh:
                        fh.write(json.dumps(r) + "\n")
                print(
                    f"  {n} node(s): {r['wall_s']:.0f} s, {r['evals']} evaluations",
                    flush=True,
                )
        finally:
            server.shutdown()
    if args.rows:
        rows = [json.loads(line) for line in args.rows.read_text().splitlines()]
    base = rows[0]
    print(
        "\nnodes  wall_s  evals  steps  evals/min  steps/min  busy  step_s  most_held  "
        "speedup  throughput/node-linear"
    )
    for r in rows:
        speed = base["wall_s"] / r["wall_s"]
        linear = (r["steps_per_min"] / base["steps_per_min"]) / (r["nodes"] / base["nodes"])
        print(
            f"{r['nodes']:5d}  {r['wall_s']:6.0f}  {r['evals']:5d}  {r['steps']:5d}  "
            f"{r['evals_per_min']:9.1f}  {r['steps_per_min']:9.1f}  {r['busy']:4.0%}  "
            f"{r['step_s']:6.1f}  {r['most_running']:9d}  {speed:7.2f}  {linear:6.0%}"
            f"   nodes used: {','.join(r['nodes_used'])}"
        )
    print(
        "\nidle node-seconds: before the first timed step | a step waiting for a node | "
        "nothing queued | after the last step; mean queue wait"
    )
    for r in rows:
        i = r.get("idle")
        if i:
            print(
                f"{r['nodes']:5d}  {i['start']:7.1f}  {i['waiting']:7.1f}  {i['starved']:7.1f}"
                f"  {i['end']:7.1f}   {i['queue_wait_mean_s']:.2f} s"
            )
    big = rows[-1]
    print(
        f"\nsqueue while the {big['nodes']}-node run held the most nodes ({big['most_running']}):"
    )
    print(big["squeue"] or "(no snapshot)")
    if not args.no_dry_run:
        print()
        print(dry_run(args.dry_run_kernels, args.dry_run_pgs, args.iterations, args.dry_run_nodes))
    sacct = subprocess.run(
        ["sacct", "-c", "-o", "JobID,JobName%16,NodeList,Start,End,Elapsed,State"],
        capture_output=True,
        text=True,
    )
    print("\nsacct -c (the test cluster's job-completion log), last pilots:")
    print("\n".join((sacct.stdout or sacct.stderr).splitlines()[-12:]))
    if args.stop:
        subprocess.run(["bash", str(CLUSTER), "stop"], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
