"""Campaigns through the Slurm workflow profile on a REAL one-node Slurm (not a mock).

The cluster is started by tests/slurm/cluster.sh (Debian slurm-wlm + munge); CI installs
it. Without Slurm on the machine these tests are skipped with the command to install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
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


def _interval(ev: dict) -> tuple[float, float]:
    prov = ev["provenance"]
    start = datetime.fromisoformat(prov["started_at"]).timestamp()
    return start, start + prov["wall_s"]


def test_evaluations_are_batched_into_few_exclusive_slurm_jobs_one_after_another(slurm_run):
    workdir, _ = slurm_run
    evals = sorted(workdir.glob("results/dgemm/iter*/pg*/attempt*/evaluation.json"))
    assert len(evals) >= 5
    by_job: dict[str, list[dict]] = {}
    for path in evals:
        ev = read_json(path, "evaluation")
        prov = ev["provenance"]
        assert prov["slurm_job_id"], f"{path} did not run under Slurm"
        assert prov["slurm"]["exclusive"] is True, f"{path}: {prov['slurm']}"
        by_job.setdefault(prov["slurm_job_id"], []).append(ev)
    assert len(by_job) < len(evals), "fewer Slurm submissions than evaluations"
    for job, members in by_job.items():
        spans = sorted(_interval(ev) for ev in members)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end - 0.01, f"two evaluations overlapped in Slurm job {job}"
    # the final rounds ran in the pilot too (exclusive node, same provenance)
    for path in workdir.glob("results/dgemm/iter*/final_round.json"):
        assert (
            "[pilot] ran in Slurm job"
            in (workdir / "results/dgemm/logs" / path.parent.name / "final_round.log").read_text()
        )


def test_the_pilot_leaves_the_cluster_when_the_campaign_ends(slurm_run):
    workdir, log = slurm_run
    assert "stopped the evaluation pilot" in log
    assert not (workdir / "results/.hpcagents/pilot/pilot.json").exists()
    pilots = _jobs("hpcagents-pilot", workdir)
    assert pilots and not [j for j in pilots if j[2] in ("RUNNING", "PENDING")], pilots


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


def _jobs(prefix: str, workdir: Path | None = None) -> list[tuple[str, str, str]]:
    """(job id, name, state) of the Slurm jobs whose name starts with ``prefix`` (and, given
    ``workdir``, that were submitted from it: a job left by an interrupted earlier run of
    the tests is not this test's)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i %j %T %Z"], capture_output=True, text=True
    ).stdout
    jobs = []
    for line in out.splitlines():
        job, name, state, where = line.split(maxsplit=3)
        if name.startswith(prefix) and (workdir is None or where == str(workdir)):
            jobs.append((job, name, state))
    return jobs


def _claimed_evaluation(workdir: Path) -> tuple[str, str] | None:
    """(pilot job id, attempt dir) of an evaluation of iteration >= 1 the pilot is running."""
    for claim in (workdir / "results/.hpcagents/pilot/claimed").glob("*@*.json"):
        try:
            argv = json.loads(claim.read_text())["argv"]
        except (OSError, ValueError):
            continue
        if "evaluate-attempt" in argv:
            attempt = str(Path(argv[argv.index("--out") + 1]).parent)
            if "/iter0/" not in attempt:
                return claim.stem.split("@", 1)[1], attempt
    return None


def test_cancelled_pilot_is_replaced_and_its_evaluation_retried_alone(slurm_run, tmp_path):
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
        found = None
        deadline = time.monotonic() + 600
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            found = _claimed_evaluation(workdir)
            time.sleep(0.05)
        assert found, "no evaluation of iteration 1 or later was seen running in the pilot"
        cancelled, attempt = found
        subprocess.run(["scancel", cancelled], check=True)
        out, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, out[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        server.shutdown()
    ev = read_json(workdir / attempt / "evaluation.json", "evaluation")
    rerun_job = ev["provenance"]["slurm_job_id"]
    assert rerun_job != cancelled
    assert (rerun_job, "hpcagents-pilot-alone") in [(j[0], j[1]) for j in _jobs("hpcagents")]
    assert ev["provenance"]["slurm"]["exclusive"] is True
    assert selections(workdir) == selections(ref_dir)
    hashes = [e["prompt_sha256"] for e in read_log(tmp_path / "requests.jsonl")]
    assert len(hashes) == len(set(hashes)), "an LLM answer was asked for twice"


def test_a_pilot_no_node_can_hold_is_an_error_naming_the_resource(slurm, tmp_path):
    server = serve(port=0, log_path=tmp_path / "requests.jsonl", latency=0.0)
    try:
        workdir = tmp_path / "campaign"
        write_campaign(workdir, small(server.url))
        proc = subprocess.run(
            [*slurm_cmd(workdir), "--set-resources", "evaluate:cpus_per_task=4096"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.shutdown()
    assert proc.returncode != 0
    log = (workdir / "results/dgemm/logs/iter0/pg0.attempt0.evaluate.log").read_text()
    assert "--cpus-per-task=4096" in log and "profiles/slurm/config.yaml" in log, log
    pilots = _jobs("hpcagents-pilot", workdir)
    assert pilots and not [j for j in pilots if j[2] == "PENDING"], pilots


def test_llm_server_launched_as_a_slurm_job_is_used_reused_and_stopped(slurm, tmp_path):
    """The scripted model (a stand-in for an LLM) is the launched server. The campaign runs
    with the local executor: on the one-node test cluster an exclusive evaluation pilot
    could not start beside the server's job, which holds part of the only node."""
    workdir = tmp_path / "campaign"
    raw = small("http://unused.invalid/v1")
    raw["campaign"].update(iterations=1)
    served = tmp_path / "served.jsonl"
    server = raw["llm"]["servers"][0]
    del server["base_url"]
    server["launch"] = {
        "command": "{python} -m hpcagents scripted-model --host {host} --port {port}"
        f" --instance {{instance}} --latency 0.05 --log {served}",
        "startup_timeout_s": 120,
        "slurm": {"cpus_per_task": 1, "time": "00:20:00"},
    }
    write_campaign(workdir, raw)
    run = [sys.executable, "-m", "hpcagents", "run", "--configfile", "config.yaml"]
    first = subprocess.run(
        [*run, "--keep-servers"], cwd=workdir, capture_output=True, text=True, timeout=900
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    started = re.search(r"started llm server 'scripted' as Slurm job (\d+) at (\S+)", first.stdout)
    assert started, first.stdout[-2000:]
    job, url = started.groups()
    assert f"kept llm server 'scripted' (Slurm job {job})" in first.stdout
    assert read_json(workdir / "results/dgemm/summary.json", "summary")["speedup"] > 1.0
    assert len(read_log(served)) >= 3, "the campaign's prompts went to the launched server"
    # the server's identity token, as /v1/models lists it, is the one the campaign launched
    state = json.loads((workdir / "results/.hpcagents/launched/scripted.json").read_text())
    with urllib.request.urlopen(f"{url}/models", timeout=10) as resp:
        assert state["instance"] in resp.read().decode()
    second = subprocess.run(run, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"reused llm server 'scripted' as Slurm job {job} at {url}" in second.stdout
    assert f"stopped llm server 'scripted' (Slurm job {job})" in second.stdout
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [
        j for j in _jobs("hpcagents-llm") if j[0] == job and j[2] == "RUNNING"
    ]:
        time.sleep(0.5)
    assert not [j for j in _jobs("hpcagents-llm") if j[0] == job and j[2] == "RUNNING"]


def test_a_launched_server_that_never_answers_is_a_clear_error(slurm, tmp_path):
    workdir = tmp_path / "campaign"
    raw = small("http://unused.invalid/v1")
    server = raw["llm"]["servers"][0]
    del server["base_url"]
    server["launch"] = {
        "command": "sleep 600",
        "startup_timeout_s": 8,
        "slurm": {"cpus_per_task": 1, "time": "00:05:00"},
    }
    write_campaign(workdir, raw)
    proc = subprocess.run(
        [sys.executable, "-m", "hpcagents", "run", "--configfile", "config.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "llm server 'scripted': not answering GET /models within 8 s" in proc.stderr
    assert "launch.startup_timeout_s" in proc.stderr
    assert not (workdir / "results/dgemm").exists(), "no step ran without its server"


def test_a_pilot_slurm_would_queue_forever_is_an_error_naming_the_limit(slurm, tmp_path):
    """The test cluster's partition `short` has MaxTime=5 min: a pilot asking for 60 is
    accepted by sbatch and then pends with Reason=PartitionTimeLimit forever."""
    server = serve(port=0, log_path=tmp_path / "requests.jsonl", latency=0.0)
    try:
        workdir = tmp_path / "campaign"
        write_campaign(workdir, small(server.url))
        proc = subprocess.run(
            [
                *slurm_cmd(workdir),
                "--set-resources",
                "evaluate:slurm_partition=short",
                "evaluate:pilot_runtime=60",
            ],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.shutdown()
    assert proc.returncode != 0
    log = (workdir / "results/dgemm/logs/iter0/pg0.attempt0.evaluate.log").read_text()
    assert "Reason=PartitionTimeLimit" in log and "--time=60" in log, log
    assert "partition short" in log and "time limit 5:00" in log, log
    pilots = _jobs("hpcagents-pilot", workdir)
    assert pilots and not [j for j in pilots if j[2] == "PENDING"], pilots
