"""``hpcagents status`` on real campaigns: mid-run, after a kill, and on partial states
cut out of a finished campaign. The scripted model is a stand-in for an LLM."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import campaign_config, snakemake_cmd, write_campaign
from hpcagents.scripted import serve
from hpcagents.views.status import campaign_status, format_status, incomplete_jobs

pytestmark = pytest.mark.slow


def status_text(workdir: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "hpcagents", "status", "--dir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def finished(small_finished_campaign) -> Path:
    """A real finished campaign: 1 iteration x 2 PGs at bench size 128, the session's one
    (conftest), which these tests only read (or copy)."""
    return small_finished_campaign


def mark_incomplete(workdir: Path, output: str) -> None:
    """Snakemake's own marker of a started, unfinished job (.snakemake/incomplete)."""
    d = workdir / ".snakemake" / "incomplete"
    d.mkdir(parents=True, exist_ok=True)
    (d / base64.urlsafe_b64encode(output.encode()).decode()).write_text('{"external_jobid": null}')


def test_finished_campaign_reports_best_and_failures(finished):
    text = status_text(finished)
    assert "not running" in text
    assert "finished (summary.json written)" in text
    assert "best so far: " in text and "GFLOP/s" in text
    # the scripted model's register_blocking fails to compile once, then is repaired
    assert "failures so far: 1 of 4 evaluated attempts (compile_error 1)" in text
    assert "stand-in" in text


def test_partial_state_cut_from_a_finished_campaign(finished, tmp_path):
    work = tmp_path / "campaign"
    shutil.copytree(finished, work, symlinks=True)
    it = work / "results" / "dgemm" / "iter1"
    (work / "results" / "dgemm" / "summary.json").unlink()
    (it / "best.json").unlink()
    shutil.rmtree(it / "best")
    # pg1: its evaluation was running when the campaign died
    (it / "pg1" / "attempt0" / "evaluation.json").unlink()
    mark_incomplete(work, "results/dgemm/iter1/pg1/attempt0/evaluation.json")
    # pg2: compile error at attempt 0; the repair's LLM request had started
    shutil.rmtree(it / "pg2" / "attempt1")
    (it / "pg2" / "attempt1").mkdir()
    mark_incomplete(work, "results/dgemm/iter1/pg2/attempt1/generation.json")
    (work / ".snakemake" / "locks").mkdir(parents=True, exist_ok=True)
    (work / ".snakemake" / "locks" / "0.output.lock").write_text("results/dgemm\n")

    assert set(incomplete_jobs(work)) == {
        "results/dgemm/iter1/pg1/attempt0/evaluation.json",
        "results/dgemm/iter1/pg2/attempt1/generation.json",
    }
    st = campaign_status(work)
    assert not st.running and st.locked
    (k,) = st.kernels
    assert k.iteration == 1 and not k.finished
    states = {p.pg: (p.state, p.attempt, p.strategy) for p in k.pgs}
    assert states == {1: ("cut", 0, "loop_reorder"), 2: ("cut", 1, "register_blocking")}
    assert k.best is not None and k.best["after_iteration"] == 0  # the baseline
    text = format_status(st)
    assert "NOT running" in text and "hpcagents run" in text
    assert "its repairing job was cut after compile_error" in text

    # the same state with the job not yet started: queued / repair due
    shutil.rmtree(work / ".snakemake" / "incomplete")
    (it / "pg2" / "attempt1").rmdir()
    k = campaign_status(work).kernels[0]
    states = {p.pg: p.state for p in k.pgs}
    assert states == {1: "queued for evaluation", 2: "repair due"}

    # no plan yet: the PM is asked
    shutil.rmtree(it)
    it.mkdir()
    assert campaign_status(work).kernels[0].phase.startswith("planning")


def test_status_mid_run_then_after_a_kill(tmp_path):
    """A real campaign, watched while it runs (slow answers), then killed at once."""
    server = serve(host="127.0.0.1", port=0, latency=1.5)
    try:
        raw = campaign_config(server.url)
        raw["campaign"].update(iterations=1, pgs=2)
        raw["evaluation"].update(bench_size=128)
        work = tmp_path / "campaign"
        write_campaign(work, raw)
        proc = subprocess.Popen(
            snakemake_cmd(work),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        seen, text = set(), ""
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                st = campaign_status(work)
                now = {p.state for p in st.kernels[0].pgs} if st.kernels else set()
                seen |= now
                if now & {"generating", "repairing"} and st.running:
                    text = status_text(work)
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"never saw a PG generating; states seen: {seen}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        server.shutdown()
    print(f"--- status mid-run ---\n{text}")
    assert "snakemake running (pid" in text
    assert "dgemm: iteration 1 of 1" in text
    assert "generating" in text or "repairing" in text
    after = status_text(work)
    print(f"--- status after kill -9 ---\n{after}")
    assert "NOT running" in after and "locked" in after
    st = campaign_status(work)
    for p in st.kernels[0].pgs:
        assert p.state in {"cut", "waiting", "done", "repair due", "queued for evaluation"}, p
