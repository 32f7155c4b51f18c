"""`hpcagents run`: one command to start and resume; a live campaign's inputs are its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import campaign_config, read_log, write_campaign
from hpcagents.campaign.workflow_support import write_effective_config
from hpcagents.spec.config import parse_config


def _hpcagents(workdir: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hpcagents", "run", "--configfile", "config.yaml", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def test_effective_config_is_named_by_content_and_never_rewritten(tmp_path):
    raw = campaign_config("http://127.0.0.1:9/v1")
    first = write_effective_config(parse_config(raw), tmp_path)
    before = (Path(first).stat().st_mtime_ns, Path(first).read_text())
    other = dict(raw, campaign={**raw["campaign"], "iterations": 7})
    second = write_effective_config(parse_config(other), tmp_path)
    assert second != first
    assert json.loads(Path(second).read_text())["campaign"]["iterations"] == 7
    # the first campaign's file is untouched, and writing it again changes nothing
    assert write_effective_config(parse_config(raw), tmp_path) == first
    assert (Path(first).stat().st_mtime_ns, Path(first).read_text()) == before


def test_dry_run_with_another_config_leaves_a_campaigns_config_alone(tmp_path):
    from conftest import run_snakemake

    write_campaign(tmp_path, campaign_config("http://127.0.0.1:9/v1"))
    assert run_snakemake(tmp_path, "--dry-run").returncode == 0
    (mine,) = (tmp_path / "results" / ".hpcagents").glob("config-*.json")
    text = mine.read_text()
    other = campaign_config("http://127.0.0.1:9/v1", **{"campaign.pgs": 1})
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(Path(__file__).resolve().parents[1] / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "other.yaml"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert mine.read_text() == text
    assert len(list((tmp_path / "results" / ".hpcagents").glob("config-*.json"))) == 2


def test_run_refuses_while_a_campaign_runs_in_the_directory(tmp_path):
    write_campaign(tmp_path, campaign_config("http://127.0.0.1:9/v1"))
    state = tmp_path / "results" / ".hpcagents"
    state.mkdir(parents=True)
    (state / "run.json").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"})
    )
    proc = _hpcagents(tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "already running" in out and str(os.getpid()) in out
    assert not (tmp_path / "results" / "dgemm").exists()


@pytest.mark.slow
def test_kill_during_llm_calls_then_run_again_sends_no_prompt_twice(start_scripted, tmp_path):
    """Snakemake is killed alone (its LLM jobs live on, as after an OOM kill); the same
    command resumes, adopts the orphans' answers and finishes with every prompt sent once."""
    server = start_scripted(latency=3.0)
    raw = campaign_config(server.url, **{"campaign.iterations": 1})
    raw["evaluation"]["bench_size"] = 128
    write_campaign(tmp_path, raw)
    first = _hpcagents(tmp_path, start_new_session=True)
    gen_logs = tmp_path / "results" / "dgemm" / "logs" / "iter1"
    deadline = time.monotonic() + 300
    while not list(gen_logs.glob("pg*.attempt0.generate.log")):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # the generate jobs have sent their requests (3 s each)
    smk = [
        p
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and b"snakemake" in (p / "cmdline").read_bytes()
        and os.getpgid(int(p.name)) == first.pid
        and b"-m\0snakemake" in (p / "cmdline").read_bytes()
    ]
    for p in smk:
        os.kill(int(p.name), signal.SIGKILL)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "results" / "dgemm" / "iter1" / "best.json").exists()
    second = _hpcagents(tmp_path)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out[-4000:]
    assert "adopted the answers of" in out
    counts = Counter(e["prompt_sha256"] for e in read_log(server.log_path))
    assert counts and max(counts.values()) == 1, counts.most_common(3)
    assert (tmp_path / "results" / "dgemm" / "summary.json").is_file()


# A stand-in for Snakemake: starts a "job" (a grandchild), and on SIGTERM ends it and
# notes that it was told to stop; with IGNORE it ignores SIGTERM (a hung Snakemake).
_SNAKEMAKE = """
import os, signal, subprocess, sys, time
out = sys.argv[1]
job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(out + ".job", "w").write(str(job.pid))
def stop(*_):
    open(out + ".told", "w").write("SIGTERM")
    job.kill()
    sys.exit(1)
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE") else stop)
time.sleep(300)
"""

_LAUNCHER = """
import sys
from hpcagents.cluster.campaigns import exit_on_sigterm
from hpcagents.cluster.run import call_snakemake
exit_on_sigterm()
call_snakemake([sys.executable, "-c", sys.argv[1], sys.argv[2]], dict(__import__("os").environ),
               grace_s=1.0)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.mark.parametrize("hung", [False, True], ids=["stops", "hung"])
def test_a_stopped_launcher_stops_snakemake_and_leaves_no_job_running(tmp_path, hung):
    out = tmp_path / "sm"
    env = {**os.environ, **({"IGNORE": "1"} if hung else {})}
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, _SNAKEMAKE, str(out)], env=env)
    job_file = Path(str(out) + ".job")
    deadline = time.monotonic() + 60
    while not job_file.is_file() or not job_file.read_text():
        assert time.monotonic() < deadline, "the stand-in never started its job"
        time.sleep(0.05)
    job = int(job_file.read_text())
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=60) == 128 + signal.SIGTERM
    if not hung:
        assert Path(str(out) + ".told").read_text() == "SIGTERM"  # asked first, not killed
    deadline = time.monotonic() + 10
    while _alive(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(job), "a job of the stopped campaign runs on as an orphan"
