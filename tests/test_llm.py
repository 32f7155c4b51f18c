"""The LLM pool against real HTTP servers (the scripted model, a stand-in for an LLM)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import read_log
from hpcagents.llm.interface import LLMUnavailable, prompt_hash
from hpcagents.llm.pool import LLMPool
from hpcagents.spec.config import LLMConfig, ServerConfig

PG_PROMPT = [
    {"role": "system", "content": "You are an expert HPC programmer."},
    {
        "role": "user",
        "content": "Kernel: dgemm\nIteration: 1\nPG: 1\nAttempt: 0\n"
        "Strategy: loop_reorder\n\nWrite the file.",
    },
]


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def pool(tmp_path: Path, urls: list[str], offline: bool = False) -> LLMPool:
    servers = tuple(
        ServerConfig(name=f"s{i}", base_url=u, model="scripted-stand-in", timeout_s=10)
        for i, u in enumerate(urls)
    )
    cfg = LLMConfig(
        servers=servers,
        temperature=0.0,
        max_tokens=4096,
        max_retries=0,
        max_reasks=1,
        cache_dir=tmp_path / "cache",
        offline=offline,
    )
    return LLMPool(cfg)


def test_answer_is_recorded_with_server_tokens_and_latency(tmp_path, start_scripted):
    server = start_scripted()
    result = pool(tmp_path, [server.url]).chat(PG_PROMPT, index=0, seed=1)
    assert "kernel_dgemm" in result.text
    assert result.server == "s0" and result.cached is False
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.latency_s >= 0.05
    logged = read_log(server.log_path)
    assert [e["prompt_sha256"] for e in logged] == [prompt_hash(PG_PROMPT)]


def test_rerun_replays_from_cache_without_asking_again(tmp_path, start_scripted):
    server = start_scripted()
    first = pool(tmp_path, [server.url]).chat(PG_PROMPT, index=0, seed=1)
    second = pool(tmp_path, [server.url]).chat(PG_PROMPT, index=0, seed=1)
    assert second.cached is True and second.text == first.text
    assert len(read_log(server.log_path)) == 1


def test_a_different_seed_is_a_different_request(tmp_path, start_scripted):
    server = start_scripted()
    p = pool(tmp_path, [server.url])
    p.chat(PG_PROMPT, index=0, seed=1)
    assert p.chat(PG_PROMPT, index=0, seed=2).cached is False


def test_pg_assignment_is_deterministic_round_robin(tmp_path):
    p = pool(tmp_path, ["http://a/v1", "http://b/v1", "http://c/v1"])
    assert [s.name for s in p.order(0)] == ["s0", "s1", "s2"]
    assert [s.name for s in p.order(4)] == ["s1", "s2", "s0"]


def test_dead_server_fails_over_to_the_next(tmp_path, start_scripted):
    server = start_scripted()
    result = pool(tmp_path, [dead_url(), server.url]).chat(PG_PROMPT, index=0, seed=1)
    assert result.server == "s1"
    assert result.errors and result.errors[0].startswith("s0:")


def test_no_server_up_is_a_clean_error_naming_each(tmp_path):
    with pytest.raises(LLMUnavailable, match=r"s0:.*s1:.*Rerun to resume"):
        pool(tmp_path, [dead_url(), dead_url()]).chat(PG_PROMPT, index=0, seed=1)


def test_offline_replay_answers_from_cache_and_refuses_misses(tmp_path, start_scripted):
    server = start_scripted()
    online = pool(tmp_path, [server.url]).chat(PG_PROMPT, index=0, seed=1)
    server.shutdown()
    offline = pool(tmp_path, [dead_url()], offline=True)
    assert offline.chat(PG_PROMPT, index=0, seed=1).text == online.text
    with pytest.raises(LLMUnavailable, match="offline replay"):
        offline.chat(PG_PROMPT, index=0, seed=99)


def _hold(args):
    import time as _t

    from hpcagents.llm.pool import server_slot

    lock_dir, cap = args
    server = ServerConfig(name="gpu", base_url="http://x/v1", model="m", max_concurrency=cap)
    with server_slot(Path(lock_dir), server):
        start = _t.monotonic()
        _t.sleep(0.3)
        return start, _t.monotonic()


def test_per_server_cap_holds_across_processes(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as ex:
        spans = sorted(ex.map(_hold, [(str(tmp_path), 1)] * 4))
    assert all(a[1] <= b[0] + 0.01 for a, b in zip(spans, spans[1:], strict=False))
    with ProcessPoolExecutor(4) as ex:
        spans = sorted(ex.map(_hold, [(str(tmp_path / "two"), 2)] * 4))
    overlaps = sum(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert overlaps >= 1  # two slots: some requests do run together


def test_every_server_kind_the_config_accepts_has_a_backend_with_the_one_interface():
    """The pool picks a server's backend module by its ``kind``: a kind the config
    accepts without one would fail only at the campaign's first request."""
    import inspect
    import json

    from hpcagents.core.artifacts import SCHEMA_DIR
    from hpcagents.llm.interface import Backend
    from hpcagents.llm.pool import BACKENDS

    schema = json.loads((SCHEMA_DIR / "config.schema.json").read_text())
    server = schema["properties"]["llm"]["properties"]["servers"]["items"]
    assert sorted(BACKENDS) == sorted(server["properties"]["kind"]["enum"])
    for module in BACKENDS.values():
        for name in ("ask", "stated_context"):
            wanted = list(inspect.signature(getattr(Backend, name)).parameters)[1:]
            assert list(inspect.signature(getattr(module, name)).parameters) == wanted, (
                module.__name__,
                name,
            )
