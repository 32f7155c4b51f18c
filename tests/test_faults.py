"""Fault injection: the scripted model (a stand-in) misbehaves like real servers do; the
pool and the campaign complete, or stop cleanly and resume, with the fault recorded."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import campaign_config, read_log, run_snakemake, snakemake_cmd, write_campaign
from hpcagents.core.artifacts import read_json
from hpcagents.llm.pool import LLMPool
from hpcagents.scripted import serve
from hpcagents.spec.config import LLMConfig, ServerConfig

PG = [
    {
        "role": "user",
        "content": "Kernel: dgemm\nIteration: 1\nPG: 1\nAttempt: 0\nStrategy: loop_reorder\n",
    }
]


def pool(
    tmp_path: Path,
    urls: list[str],
    timeout_s: float = 10,
    retries: int = 2,
    timeout_retries: int = 1,
) -> LLMPool:
    servers = tuple(
        ServerConfig(name=f"s{i}", base_url=u, model="scripted-stand-in", timeout_s=timeout_s)
        for i, u in enumerate(urls)
    )
    return LLMPool(
        LLMConfig(
            servers=servers,
            temperature=0.0,
            max_tokens=4096,
            max_retries=retries,
            max_reasks=1,
            cache_dir=tmp_path / "cache",
            timeout_retries=timeout_retries,
        )
    )


@pytest.mark.parametrize("fault", ["http500", "http429", "die", "hang"])
def test_transient_fault_is_retried_and_recorded(tmp_path, fault):
    server = serve(
        port=0, log_path=tmp_path / "log.jsonl", faults=(fault,), fault_every=1, hang_s=3
    )
    try:
        # every request faults: with one server the call fails cleanly after its retries ...
        with pytest.raises(Exception, match="no LLM server answered"):
            pool(tmp_path, [server.url], timeout_s=1, retries=1).chat(PG, index=0, seed=1)
        # ... and with the fault on every 2nd request the retry gets the answer
        server.fault_every = 2
        server._served = 1  # the next request is number 2: it faults, the retry does not
        result = pool(tmp_path, [server.url], timeout_s=1).chat(PG, index=0, seed=2)
    finally:
        server.shutdown()
    assert "kernel_dgemm" in result.text
    assert result.retries >= 1 and any(fault_word(fault) in e for e in result.errors)
    assert any(e["fault"] == fault for e in read_log(tmp_path / "log.jsonl"))


def fault_word(fault: str) -> str:
    return {"http500": "500", "http429": "429", "die": "Connection", "hang": "Timeout"}[fault]


def test_dead_server_mid_pool_fails_over_and_records_it(tmp_path):
    a = serve(port=0, log_path=tmp_path / "a.jsonl")
    b = serve(port=0, log_path=tmp_path / "b.jsonl")
    p = pool(tmp_path, [a.url, b.url], retries=0)
    first = p.chat(PG, index=1, seed=1)  # PG index 1 prefers server s1 (b)
    b.shutdown()
    second = p.chat(PG, index=1, seed=2)
    a.shutdown()
    assert first.server == "s1" and second.server == "s0"
    assert not first.failover and second.failover
    assert second.errors and second.errors[0].startswith("s1:")


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["truncated", "garbage", "invalid_json", "http500", "http429", "die", "hang", "slow_stream"],
)
def test_campaign_completes_under_each_fault(tmp_path, fault):
    log = tmp_path / "log.jsonl"
    # every 3rd distinct prompt fails its first try: with the PGs running concurrently a
    # count of requests would make which PG's retry faults again a matter of interleaving
    server = serve(
        port=0, log_path=log, faults=(fault,), fault_every=3, fault_scope="prompt", hang_s=5
    )
    try:
        raw = campaign_config(server.url, **{"campaign.iterations": 1, "campaign.pgs": 4})
        raw["llm"]["servers"][0]["timeout_s"] = 2  # a hung request is abandoned after 2 s
        write_campaign(tmp_path / "c", raw)
        proc = run_snakemake(tmp_path / "c")
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    faulted = [e for e in read_log(log) if e["fault"] == fault]
    assert faulted, "the fault was injected"
    results = tmp_path / "c" / "results" / "dgemm"
    summary = read_json(results / "summary.json", "summary")
    assert summary["rows"][-1]["valid"] >= 1
    gens = [read_json(p, "generation") for p in results.glob("iter1/pg*/attempt*/generation.json")]
    plan = read_json(results / "iter1" / "plan.json", "plan")
    if fault == "truncated":
        assert any(g["status"] == "truncated" for g in gens) or plan["reasks"] >= 1
    if fault == "garbage":
        assert any(g["status"] == "no_code" for g in gens) or plan["reasks"] >= 1
    if fault == "invalid_json":
        assert plan["reasks"] >= 1 or all(e["kind"] != "plan" for e in faulted)
    if fault in ("http500", "http429", "die", "hang"):
        retried = [g for g in gens if g["llm"] and g["llm"]["retries"]] + [
            c for c in plan["llm_calls"] if c["retries"]
        ]
        assert retried


@pytest.mark.slow
def test_no_server_stops_cleanly_and_a_rerun_resumes(tmp_path):
    log = tmp_path / "log.jsonl"
    server = serve(port=0, log_path=log)
    port = server.port
    workdir = tmp_path / "c"
    write_campaign(
        workdir, campaign_config(server.url, **{"campaign.iterations": 2, "campaign.pgs": 2})
    )
    proc = subprocess.Popen(
        snakemake_cmd(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while not (workdir / "results/dgemm/iter1/best.json").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    server.shutdown()  # the only server dies in the middle of the campaign
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in workdir.glob("results/dgemm/logs/**/*.log"))
    assert "no LLM server answered" in logs + out
    done = {p: p.stat().st_mtime for p in workdir.glob("results/dgemm/iter*/**/*.json")}
    server = serve(port=port, log_path=log)
    try:
        rerun = run_snakemake(workdir)
    finally:
        server.shutdown()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert all(p.stat().st_mtime == t for p, t in done.items()), "finished work was redone"
    hashes = [e["prompt_sha256"] for e in read_log(log) if e.get("kind") != "error"]
    assert len(hashes) == len(set(hashes))
    assert json.loads((workdir / "results/dgemm/summary.json").read_text())["iterations"] == 2


@pytest.mark.slow
def test_server_killed_mid_iteration_its_pgs_fail_over(tmp_path):
    a = serve(port=0, log_path=tmp_path / "a.jsonl", latency=0.05)
    b = serve(port=0, log_path=tmp_path / "b.jsonl", latency=0.4)
    workdir = tmp_path / "c"
    raw = campaign_config(a.url, **{"campaign.iterations": 2, "campaign.pgs": 4})
    raw["llm"]["servers"] = [
        {"name": "a", "base_url": a.url, "model": "scripted-stand-in", "timeout_s": 10},
        {"name": "b", "base_url": b.url, "model": "scripted-stand-in", "timeout_s": 10},
    ]
    write_campaign(workdir, raw)
    proc = subprocess.Popen(
        snakemake_cmd(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not read_log(tmp_path / "b.jsonl"):  # b has started serving iteration 1
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        b.shutdown()
        assert proc.wait(timeout=600) == 0
    finally:
        a.shutdown()
        b.shutdown()
    gens = [
        read_json(p, "generation")
        for p in workdir.glob("results/dgemm/iter*/pg*/*/generation.json")
    ]
    failed_over = [g for g in gens if g["llm"] and g["llm"]["failover"]]
    assert failed_over, "some PGs of server b must have failed over to a"
    assert all(g["llm"]["server"] == "a" and "b:" in g["llm"]["errors"][0] for g in failed_over)
    summary = read_json(workdir / "results/dgemm/summary.json", "summary")
    assert summary["totals"]["per_server"]["a"]["failovers_in"] >= 1


def test_structured_output_refused_steps_down_once_and_is_remembered(tmp_path):
    server = serve(port=0, log_path=tmp_path / "log.jsonl")
    server.structured_output = False  # refuses any response_format with HTTP 400
    pm = [
        {
            "role": "user",
            "content": "Kernel: dgemm\nIteration: 1\nStrategies wanted: 2\n",
        }
    ]

    def fresh_pool() -> LLMPool:  # a new job process: only the state file is shared
        p = pool(tmp_path, [server.url])
        return LLMPool(replace(p.cfg, state_dir=tmp_path / "state"))

    try:
        first = fresh_pool().chat(pm, index=0, seed=1, json_schema={"type": "object"})
        second = fresh_pool().chat(pm, index=0, seed=2, json_schema={"type": "object"})
    finally:
        server.shutdown()
    assert '"strategies"' in first.text
    refusals = [e for e in first.errors if "refused" in e]
    assert len(refusals) == 2  # json_schema, then json_object, then plain
    assert "(json_schema) refused, asked with json_object" in refusals[0]
    assert first.response_format == "none" and first.retries == 0
    assert [t["outcome"] for t in first.tries] == ["format_refused", "format_refused", "ok"]
    # remembered for the campaign: the next job asks plainly at once
    assert second.errors == [] and [t["outcome"] for t in second.tries] == ["ok"]
    state = json.loads((tmp_path / "state" / "s0.json").read_text())
    assert state["structured_output"] == "none"
