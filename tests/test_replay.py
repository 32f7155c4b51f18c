"""Exact replay: an archived campaign re-runs from its response cache with no server."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from conftest import campaign_config, read_log, run_snakemake, write_campaign
from hpcagents.artifacts import read_json
from hpcagents.scripted import serve

pytestmark = pytest.mark.slow


def snapshot(workdir: Path) -> dict:
    res = workdir / "results" / "dgemm"
    plans = {p.parent.name: read_json(p, "plan")["strategies"] for p in res.glob("iter*/plan.json")}
    sources = {
        str(p.relative_to(res)): read_json(p, "generation")["source_sha256"]
        for p in res.glob("iter*/pg*/attempt*/generation.json")
    }
    selections = [
        {k: read_json(p, "best")["selected"][k] for k in ("iteration", "pg", "attempt", "strategy")}
        for p in sorted(res.glob("iter*/best.json"))
    ]
    return {"plans": plans, "sources": sources, "selections": selections}


def test_offline_replay_reproduces_plans_candidates_and_selections(tmp_path):
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
