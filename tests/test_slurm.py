"""Campaigns through the Slurm workflow profile on a REAL multi-node Slurm (not a mock).

The cluster is started by tests/slurm/cluster.sh (Debian slurm-wlm + munge): one slurmd
per node on this machine, 2 nodes where there are 2 cores or more. CI installs it. Without
Slurm on the machine these tests are skipped with the command to install it.
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
import yaml
from conftest import campaign_config, read_log, write_campaign
from hpcagents.core.artifacts import REPO_DIR, read_json
from hpcagents.scripted import serve

pytestmark = pytest.mark.slow
CLUSTER = REPO_DIR / "tests" / "slurm" / "cluster.sh"


def test_the_generated_slurm_conf_runs_no_command_of_the_host():
    """slurm.conf is written from an unquoted heredoc (it expands $STATE and friends): a
    backtick or $( in it would run on the host and paste its output into the config."""
    text = CLUSTER.read_text()
    body = text.split("cat <<CONF\n", 1)[1].split("\nCONF\n", 1)[0]
    assert body.strip() and "ClusterName=" in body
    assert "`" not in body and "$(" not in body


@pytest.fixture(scope="module")
def slurm():
    if not shutil.which("slurmctld") or not shutil.which("sbatch"):
        pytest.skip(f"no Slurm on this machine: run `bash {CLUSTER} install` (as root)")
    proc = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return True


def nodes() -> list[tuple[str, int]]:
    """(name, CPUs) of the test cluster's nodes."""
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %c"], capture_output=True, text=True
    ).stdout
    return sorted({(n, int(c)) for n, c in (line.split() for line in out.splitlines())})


def slurm_profile(where: Path) -> Path:
    """profiles/slurm with the lines its comments say to EDIT for a cluster set for this
    one: a pilot's CPUs are one node's, and the pool may hold every node."""
    raw = yaml.safe_load((REPO_DIR / "profiles/slurm/config.yaml").read_text())
    node = raw["set-resources"]["evaluate"]
    node.update(cpus_per_task=nodes()[0][1], max_timing_nodes=len(nodes()), pilot_idle_s=30)
    raw["set-resources"]["select"] = node
    path = where / "profile"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(raw))
    return path


def slurm_cmd(workdir: Path) -> list[str]:
    """The documented command, run from the repository root, plus where this campaign
    lives (and the profile set for the test cluster)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        str(slurm_profile(workdir.parent)),
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
    """Two kernels in one campaign: their evaluations share the pool of pilots."""
    root = tmp_path_factory.mktemp("slurm")
    server = serve(port=0, log_path=root / "requests.jsonl", latency=0.05)
    try:
        workdir = root / "campaign"
        raw = small(server.url)
        raw["kernels"] = ["dgemm", "dgemv"]
        write_campaign(workdir, raw)
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


def _evaluations(workdir: Path) -> list[dict]:
    return [
        read_json(path, "evaluation")
        for path in sorted(workdir.glob("results/*/iter*/pg*/attempt*/evaluation.json"))
    ]


def test_evaluations_share_a_pool_of_exclusive_nodes_never_two_on_one_node_at_once(slurm_run):
    workdir, _ = slurm_run
    evals = _evaluations(workdir)
    assert len(evals) >= 10 and {ev["kernel"] for ev in evals} == {"dgemm", "dgemv"}
    by_node: dict[str, list[tuple[float, float]]] = {}
    jobs = set()
    for ev in evals:
        prov = ev["provenance"]
        assert prov["slurm_job_id"], f"{ev['source']} did not run under Slurm"
        assert prov["slurm"]["exclusive"] is True, f"{ev['source']}: {prov['slurm']}"
        by_node.setdefault(prov["slurm"]["node"], []).append(_interval(ev))
        jobs.add(prov["slurm_job_id"])
    assert len(jobs) < len(evals), "fewer Slurm submissions than evaluations"
    assert sorted(by_node) == [name for name, _ in nodes()], "every node of the pool timed"
    for node, spans in by_node.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end - 0.01, f"two evaluations overlapped on node {node}"
    # ...while the nodes worked at the same time: some evaluations overlapped across nodes
    (a, spans_a), (b, spans_b) = list(by_node.items())[:2]
    assert any(s1 < e2 and s2 < e1 for s1, e1 in spans_a for s2, e2 in spans_b), (a, b)


def test_a_final_round_runs_on_one_node_that_its_log_names(slurm_run):
    workdir, _ = slurm_run
    rounds = list(workdir.glob("results/*/iter*/final_round.json"))
    assert len(rounds) == 4
    names = [name for name, _ in nodes()]
    for path in rounds:
        kernel, it = path.parts[-3], path.parent.name
        log = (workdir / "results" / kernel / "logs" / it / "final_round.log").read_text()
        ran = re.findall(r"\[pilot\] ran in Slurm job \d+ on node (\S+)", log)
        assert len(ran) == 1 and ran[0] in names, log[-500:]


def test_the_pilot_leaves_the_cluster_when_the_campaign_ends(slurm_run):
    workdir, log = slurm_run
    assert "stopped the evaluation pilots" in log or "stopping (idle" in "".join(
        p.read_text() for p in (workdir / "results/.hpcagents/pilot").glob("slurm-*.out")
    )
    assert not list((workdir / "results/.hpcagents/pilot/pilots").iterdir())
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


def _node_of(job: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True
    ).stdout.strip()


def _job_tree(job: str) -> list[int]:
    """The processes of a running Slurm job on the test cluster: its slurmstepd and every
    descendant (proctrack/linuxproc)."""
    table = [
        tuple(map(int, line.split()))
        for line in subprocess.run(
            ["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True
        ).stdout.splitlines()
    ]
    roots = subprocess.run(
        ["pgrep", "-f", rf"^slurmstepd: \[{job}\."], capture_output=True, text=True
    ).stdout.split()
    keep = {int(p) for p in roots}
    grew = True
    while grew:
        grew = False
        for pid, ppid in table:
            if ppid in keep and pid not in keep:
                keep.add(pid)
                grew = True
    return sorted(keep)


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _run_until_claimed(
    workdir: Path, url: str, event, freeze: bool = False, **campaign
) -> tuple[str, str, str]:
    """Run a small campaign; when an evaluation of iteration >= 1 is running in a pilot,
    call ``event(node, job)``; return (node, job, attempt dir) once the campaign ends.
    With ``freeze``, the pilot's processes are stopped first and the event happens only
    if the evaluation was still running then (otherwise they go on and the next is
    taken): what is killed next is surely mid-evaluation."""
    raw = small(url)
    raw["campaign"].update(**campaign)
    write_campaign(workdir, raw)
    proc = subprocess.Popen(
        slurm_cmd(workdir),
        cwd=REPO_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        found = None
        deadline = time.monotonic() + 600
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            found = _claimed_evaluation(workdir)
            if found and freeze:
                frozen = _job_tree(found[0])
                _signal(frozen, signal.SIGSTOP)
                if (workdir / found[1] / "evaluation.json").exists() or found != (
                    _claimed_evaluation(workdir)
                ):
                    _signal(frozen, signal.SIGCONT)  # it had finished: try the next one
                    found = None
            time.sleep(0.05)
        assert found, "no evaluation of iteration 1 or later was seen running in a pilot"
        job, attempt = found
        node = _node_of(job)
        event(node, job)
        out, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, out[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return node, job, attempt


def _ran_once(workdir: Path) -> None:
    """Every step that ran to its end in a pilot wrote its artifact, and none ran twice:
    one line in the pool's busy log per evaluation and final round."""
    steps = len(list(workdir.glob("results/*/iter*/pg*/attempt*/evaluation.json")))
    steps += len(list(workdir.glob("results/*/iter*/final_round.json")))
    busy = (workdir / "results/.hpcagents/pilot/busy.jsonl").read_text().splitlines()
    assert len(busy) == steps, f"{len(busy)} steps ran to their end for {steps} artifacts"


def test_a_node_that_dies_mid_evaluation_loses_nothing_and_repeats_nothing(slurm_run, tmp_path):
    """The node's slurmd and every process of its job are killed (a node failure): Slurm
    marks it DOWN, the evaluation is retried on the other node, alone, and the campaign
    selects what the undisturbed campaign selected."""
    if len(nodes()) < 2:
        pytest.skip("a node failure needs a second node to retry on (2 cores or more)")
    ref_dir, _ = slurm_run
    server = serve(port=0, log_path=tmp_path / "requests.jsonl", latency=0.05)
    crashed = []

    def crash(node, job):
        subprocess.run(["bash", str(CLUSTER), "crash-node", node], check=True)
        crashed.append(node)

    try:
        node, job, attempt = _run_until_claimed(
            tmp_path / "campaign", server.url, crash, freeze=True
        )
    finally:
        server.shutdown()
        for name in crashed:
            subprocess.run(["bash", str(CLUSTER), "revive", name], check=True)
    workdir = tmp_path / "campaign"
    ev = read_json(workdir / attempt / "evaluation.json", "evaluation")
    prov = ev["provenance"]
    assert prov["slurm_job_id"] != job and prov["slurm"]["node"] != node
    assert (prov["slurm_job_id"], "hpcagents-pilot-alone") in [(j[0], j[1]) for j in _jobs("")]
    assert prov["slurm"]["exclusive"] is True
    assert selections(workdir) == selections(ref_dir)
    _ran_once(workdir)
    hashes = [e["prompt_sha256"] for e in read_log(tmp_path / "requests.jsonl")]
    assert len(hashes) == len(set(hashes)), "an LLM answer was asked for twice"


def test_a_drained_node_finishes_its_evaluation_and_takes_no_more(slurm, tmp_path):
    if len(nodes()) < 2:
        pytest.skip("draining a node needs a second node to go on with (2 cores or more)")
    server = serve(port=0, log_path=tmp_path / "requests.jsonl", latency=0.05)
    drained = []

    def drain(node, job):
        subprocess.run(
            ["scontrol", "update", f"NodeName={node}", "State=DRAIN", "Reason=hpcagents-test"],
            check=True,
        )
        drained.append((node, time.time()))

    try:
        node, job, attempt = _run_until_claimed(
            tmp_path / "campaign", server.url, drain, iterations=1
        )
    finally:
        server.shutdown()
        for name, _ in drained:
            subprocess.run(["scontrol", "update", f"NodeName={name}", "State=RESUME"], check=False)
    workdir = tmp_path / "campaign"
    ev = read_json(workdir / attempt / "evaluation.json", "evaluation")
    assert ev["provenance"]["slurm_job_id"] == job, "the running evaluation finished there"
    at = drained[0][1]
    # (the drained evaluation's own start may come after the drain: its process had just
    # been started when the test saw the claim)
    later = [
        e for e in _evaluations(workdir) if _interval(e)[0] > at and e["source"] != ev["source"]
    ]
    assert later, "evaluations started after the drain"
    assert {e["provenance"]["slurm"]["node"] for e in later} == {n for n, _ in nodes()} - {node}
    pilot_out = (workdir / f"results/.hpcagents/pilot/slurm-{job}.out").read_text()
    assert f"node {node} is draining" in pilot_out
    _ran_once(workdir)


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
