"""Exact replay: an archived campaign re-runs from its response cache with no server."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from conftest import campaign_config, read_log, run_snakemake, write_campaign
from hpcagents.core.artifacts import read_json
from hpcagents.scripted import serve

pytestmark = pytest.mark.slow


def snapshot(workdir: Path) -> dict:
    res = workdir / "results" / "dgemm"
    plans = {p.parent.name: read_json(p, "plan")["strategies"] for p in res.glob("iter*/plan.json")}
    sources = {
        str(p.relative_to(res)): read_json(p, "generation")["source_sha256"]
        for p in res.glob("iter*/pg*/attempt*/generation.json")
    }
    # Selections are not compared: a replay times the kernels again, so which one wins a
    # close race depends on the machine at the time (the answers are what is replayed).
    iterations = sorted(read_json(p, "best")["iteration"] for p in res.glob("iter*/best.json"))
    return {"plans": plans, "sources": sources, "iterations": iterations}


def test_offline_replay_reproduces_plans_and_candidates(tmp_path):
    log = tmp_path / "requests.jsonl"
    server = serve(port=0, log_path=log)
    try:
        original = tmp_path / "original"
        write_campaign(original, campaign_config(server.url))
        assert run_snakemake(original).returncode == 0
    finally:
        server.shutdown()
    served = len(read_log(log))
    # Archive = the config + the response cache; replay in a fresh directory, offline,
    # with every server address dead.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    replay = tmp_path / "replay"
    raw = campaign_config(dead, **{"llm.offline": True})
    write_campaign(replay, raw)
    shutil.copytree(original / "results" / ".llm-cache", replay / "results" / ".llm-cache")
    proc = run_snakemake(replay)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(replay) == snapshot(original)
    assert len(read_log(log)) == served
    gens = list((replay / "results/dgemm").glob("iter*/pg*/attempt*/generation.json"))
    assert all(read_json(p, "generation")["llm"]["cached"] for p in gens if "iter0" not in str(p))


def _held(lock: Path) -> bool:
    import fcntl

    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def test_resume_beside_an_orphaned_job_in_flight_never_sends_a_prompt_twice(tmp_path):
    import os
    import signal
    import subprocess
    import threading
    import time

    from conftest import snakemake_cmd
    from mock_servers import flock_waiters, gate_answers

    log = tmp_path / "requests.jsonl"
    server = serve(port=0, log_path=log, latency=0.05)
    workdir = tmp_path / "c"
    write_campaign(
        workdir, campaign_config(server.url, **{"campaign.iterations": 1, "campaign.pgs": 2})
    )
    inflight = workdir / "results/.llm-cache/.inflight"
    gate = threading.Event()
    try:
        # Not a new session: killing Snakemake alone leaves its running jobs orphaned, as
        # a crash of the login shell or an OOM kill of the main process does.
        proc = subprocess.Popen(
            snakemake_cmd(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 300
        while not (workdir / "results/dgemm/iter1/plan.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        gate_answers(server, gate)  # the PGs' first requests stay in flight until it opens
        # in flight: the sender holds the request's lock and the server is answering it
        while not (server._inflight and any(_held(p) for p in inflight.glob("*.lock"))):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert run_snakemake(workdir, "--unlock").returncode == 0
        resumed: list = []
        runner = threading.Thread(target=lambda: resumed.append(run_snakemake(workdir)))
        runner.start()
        # the resumed run's job asks the same thing: it must wait for the orphan's answer
        while not any(flock_waiters(p) for p in inflight.glob("*.lock")):
            assert time.monotonic() < deadline and runner.is_alive()
            time.sleep(0.05)
        gate.set()
        runner.join(600)
        assert resumed[0].returncode == 0, resumed[0].stderr[-3000:]
    finally:
        gate.set()
        server.shutdown()
    hashes = [e["prompt_sha256"] for e in read_log(log) if e.get("kind") != "error"]
    assert len(hashes) == len(set(hashes)), "a prompt was sent twice"
    # (The resumed job did wait: the gate opened only once a second sender was seen
    # blocked on the orphan's lock. Which of the two then writes generation.json last is
    # a race between equal answers, so the record's inflight_wait_s is not asserted.)
    gens = [
        read_json(p, "generation")
        for p in (workdir / "results/dgemm").glob("iter1/pg*/attempt0/generation.json")
    ]
    assert gens and all(g["status"] in ("ok", "no_code", "truncated") for g in gens)
