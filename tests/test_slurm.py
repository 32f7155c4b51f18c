"""Campaigns through the Slurm workflow profile on a REAL one-node Slurm (not a mock).

The cluster is started by tests/slurm/cluster.sh (Debian slurm-wlm + munge); CI installs
it. Without Slurm on the machine these tests are skipped with the command to install it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import campaign_config, read_log, write_campaign
from hpcagents.artifacts import REPO_DIR, read_json
from hpcagents.scripted import serve

pytestmark = pytest.mark.slow
CLUSTER = REPO_DIR / "tests" / "slurm" / "cluster.sh"


@pytest.fixture(scope="module")
def slurm():
    if not shutil.which("slurmctld") or not shutil.which("sbatch"):
        pytest.skip(f"no Slurm on this machine: run `bash {CLUSTER} install` (as root)")
    proc = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return True


def slurm_cmd(workdir: Path) -> list[str]:
    """The documented command, run from the repository root, plus where this campaign lives."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        "slurm",
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
    ]


def small(url: str) -> dict:
    raw = campaign_config(url)
    raw["campaign"].update(iterations=2, pgs=2)
    return raw


def selections(workdir: Path) -> list[tuple]:
    out = []
    for i in range(3):
        sel = read_json(workdir / f"results/dgemm/iter{i}/best.json", "best")["selected"]
        out.append((sel["iteration"], sel["pg"], sel["strategy"], sel["attempt"]))
    return out


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    server = serve(port=0, log_path=root / "requests.jsonl", latency=0.05)
    try:
        workdir = root / "campaign"
        write_campaign(workdir, small(server.url))
        proc = subprocess.run(
            slurm_cmd(workdir), cwd=REPO_DIR, capture_output=True, text=True, timeout=1200
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        yield workdir, proc.stdout + proc.stderr
    finally:
        server.shutdown()


def test_every_evaluation_ran_as_an_exclusive_slurm_job(slurm_run):
    workdir, log = slurm_run
    evals = sorted(workdir.glob("results/dgemm/iter*/pg*/attempt*/evaluation.json"))
    assert len(evals) >= 5
    job_ids = set()
    for path in evals:
        prov = read_json(path, "evaluation")["provenance"]
        assert prov["slurm_job_id"], f"{path} did not run under Slurm"
        job_ids.add(prov["slurm_job_id"])
        if prov["slurm"]["exclusive"] is not None or read_json(path, "evaluation")["timing"]:
            assert prov["slurm"]["exclusive"] is True, f"{path}: {prov['slurm']}"
    assert len(job_ids) == len(evals), "one Slurm job per attempt"
    assert "executor: slurm" in log.lower() or "slurm" in log.lower()


def test_no_llm_call_ran_inside_a_slurm_job(slurm_run):
    workdir, _ = slurm_run
    gens = list(workdir.glob("results/dgemm/iter*/pg*/attempt*/generation.json"))
    assert gens
    for path in gens:
        gen = read_json(path, "generation")
        assert gen.get("slurm_job_id") is None, f"{path} was generated inside a Slurm job"


def test_slurm_campaign_selects_like_the_local_one(slurm_run):
    workdir, _ = slurm_run
    summary = read_json(workdir / "results/dgemm/summary.json", "summary")
    assert summary["speedup"] > 1.5 and summary["totals"]["repairs_succeeded"] >= 1


def _running_evaluation_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %k %T"], capture_output=True, text=True).stdout
    return [
        line.split()[0] for line in out.splitlines() if "evaluate" in line and "RUNNING" in line
    ]


def test_cancelled_evaluation_job_then_rerun_completes_with_same_selections(slurm_run, tmp_path):
    ref_dir, _ = slurm_run
    server = serve(port=0, log_path=tmp_path / "requests.jsonl", latency=0.05)
    try:
        workdir = tmp_path / "campaign"
        write_campaign(workdir, small(server.url))
        proc = subprocess.Popen(
            slurm_cmd(workdir),
            cwd=REPO_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        cancelled = None
        deadline = time.monotonic() + 600
        while cancelled is None and time.monotonic() < deadline and proc.poll() is None:
            jobs = _running_evaluation_jobs()
            if jobs and (workdir / "results/dgemm/iter0/best.json").exists():
                cancelled = jobs[0]
                subprocess.run(["scancel", cancelled], check=True)
            time.sleep(0.2)
        assert cancelled, "no evaluation job of iteration 1 or later was seen running"
        out, _ = proc.communicate(timeout=1200)
        state = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", cancelled, "-o", "%T"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert state == "CANCELLED"
        if proc.returncode != 0:
            assert "Error" in out  # a failed job, reported; the rerun resumes
        rerun = subprocess.run(
            slurm_cmd(workdir), cwd=REPO_DIR, capture_output=True, text=True, timeout=1200
        )
        assert rerun.returncode == 0, rerun.stderr[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        server.shutdown()
    assert selections(workdir) == selections(ref_dir)
    hashes = [e["prompt_sha256"] for e in read_log(tmp_path / "requests.jsonl")]
    assert len(hashes) == len(set(hashes)), "an LLM answer was asked for twice"
