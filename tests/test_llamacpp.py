"""Against a real llama.cpp server (tests/llamacpp_server.py: llama.cpp's own HTTP server
code from the xllamacpp wheel, on a tiny random-weight GGUF made with the gguf package).

The model's answers are noise, so a campaign against it alone must end cleanly with every
attempt failed for a recorded reason; beside the scripted model (a stand-in for an LLM)
the requests llama.cpp cannot take fail over and the campaign finds valid kernels.
"""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import campaign_config, read_log, run_snakemake, write_campaign
from hpcagents.core.artifacts import read_json
from hpcagents.llm.interface import PromptTooLong
from hpcagents.llm.pool import LLMPool
from hpcagents.llm.probe import probe
from hpcagents.spec.config import LLMConfig, ServerConfig

pytest.importorskip(
    "xllamacpp", reason="xllamacpp (llama.cpp's server, prebuilt CPU wheel) is not installed"
)
pytest.importorskip("gguf", reason="the gguf package (to make the tiny model) is not installed")

HERE = Path(__file__).parent
ALIAS = "tiny-random-llama"
PG = [
    {
        "role": "user",
        "content": "Kernel: dgemm\nIteration: 1\nPG: 1\nAttempt: 0\nStrategy: loop_reorder\n",
    }
]


@pytest.fixture
def llama_server(tmp_path):
    """Start llama.cpp servers with a given context; each prints its URL once listening."""
    procs: list[subprocess.Popen] = []

    def start(ctx: int) -> str:
        err = (tmp_path / f"llama-{len(procs)}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "llamacpp_server.py"), "--ctx", str(ctx)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            pytest.fail(f"llama.cpp server did not start: {line!r}, see {err.name}")
        return line.split()[1]

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_probe_reads_llama_cpp_context_from_props_and_finds_json_schema(llama_server):
    url = llama_server(ctx=2048)
    caps = probe(ServerConfig("llama", url, ALIAS))
    assert caps.usable and caps.kind == "llama.cpp" and caps.model_present
    assert (caps.context_tokens, caps.context_source) == (2048, "/props n_ctx")
    assert caps.structured_output == "json_schema"
    # llama.cpp serves its one model whatever the name: a note, not an exclusion
    other = probe(ServerConfig("llama", url, "qwen2.5-coder-32b"))
    assert other.usable and any("whatever the name" in n for n in other.notes)


def test_llama_cpp_context_overflow_is_recognised(tmp_path, llama_server):
    url = llama_server(ctx=512)
    long_pg = [{**PG[0], "content": PG[0]["content"] + "y" * 3000}]
    # context_tokens set too large by mistake: the request is sent, llama.cpp refuses it
    wrong = ServerConfig("llama", url, ALIAS, context_tokens=65536, timeout_s=30)
    cfg = LLMConfig(
        servers=(wrong,),
        temperature=0.0,
        max_tokens=64,
        max_retries=2,
        max_reasks=0,
        cache_dir=tmp_path / "cache",
    )
    with pytest.raises(PromptTooLong) as err:
        LLMPool(cfg).chat(long_pg, index=0, seed=1)
    assert "exceeds the available context size" in str(err.value)
    assert "context_tokens" in str(err.value)
    # with the context read from the server, the prompt is not even sent
    right = LLMConfig(**{**cfg.__dict__, "servers": (ServerConfig("llama", url, ALIAS),)})
    with pytest.raises(PromptTooLong, match="does not fit the 512-token context"):
        LLMPool(right).chat(long_pg, index=0, seed=2)


def _llama_campaign(tmp_path: Path, servers: list[dict], scripted_url: str) -> Path:
    raw = campaign_config(
        scripted_url,
        **{
            "campaign.iterations": 1,
            "campaign.pgs": 2,
            "campaign.max_repairs": 1,
            "llm.max_tokens": 256,
            "llm.max_reasks": 1,
        },
    )
    raw["llm"]["servers"] = servers
    workdir = tmp_path / "c"
    write_campaign(workdir, raw)
    return workdir


def _generations(workdir: Path) -> list[dict]:
    return [
        read_json(p, "generation")
        for p in sorted(workdir.glob("results/dgemm/iter1/pg*/attempt*/generation.json"))
    ]


@pytest.mark.slow
def test_campaign_against_llama_cpp_alone_ends_cleanly_every_attempt_failed(tmp_path, llama_server):
    url = llama_server(ctx=32768)  # room for prompts at one byte a token
    server = {"name": "llama", "base_url": url, "model": ALIAS, "timeout_s": 60}
    workdir = _llama_campaign(tmp_path, [server], url)
    proc = run_snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = read_json(workdir / "results/.hpcagents/servers/llama.json")
    assert state["kind"] == "llama.cpp" and state["context_tokens"] == 32768
    plan = read_json(workdir / "results/dgemm/iter1/plan.json", "plan")
    assert plan["llm_calls"] and all(c["role"] == "pm" for c in plan["llm_calls"])
    assert plan["origin"] == "fallback" and plan["errors"]  # noise is not a plan
    gens = _generations(workdir)
    assert len(gens) == 4  # 2 PGs x (attempt 0 + 1 repair)
    assert all(g["status"] != "ok" and g["reason"] for g in gens)
    assert all(g["llm"]["server"] == "llama" and g["llm"]["role"] == "pg" for g in gens)
    assert all(g["llm"]["tries"][-1]["outcome"] == "ok" for g in gens)
    summary = read_json(workdir / "results/dgemm/summary.json", "summary")
    assert summary["rows"][-1]["valid"] == 0 and not summary["rows"][-1]["changed"]


@pytest.mark.slow
def test_campaign_with_llama_cpp_beside_the_scripted_model_fails_over(
    tmp_path, llama_server, start_scripted
):
    url = llama_server(ctx=1024)  # no campaign prompt fits: every request fails over
    scripted = start_scripted()
    servers = [
        {"name": "scripted", "base_url": scripted.url, "model": "scripted-stand-in"},
        {"name": "llama", "base_url": url, "model": ALIAS, "timeout_s": 60},
    ]
    workdir = _llama_campaign(tmp_path, servers, scripted.url)
    proc = run_snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = read_json(workdir / "results/dgemm/iter1/plan.json", "plan")
    pm = plan["llm_calls"][0]  # iteration 1 prefers server 2 of 2: llama
    assert plan["origin"] == "llm" and pm["server"] == "scripted" and pm["failover"]
    assert pm["tries"][0]["server"] == "llama"
    assert pm["tries"][0]["outcome"] == "not_sent_context"
    moved = [g for g in _generations(workdir) if g["llm"] and g["llm"]["failover"]]
    assert moved and all(g["llm"]["tries"][0]["server"] == "llama" for g in moved)
    summary = read_json(workdir / "results/dgemm/summary.json", "summary")
    assert summary["rows"][-1]["valid"] >= 1
    assert all(e.get("kind") != "error" for e in read_log(scripted.log_path))
