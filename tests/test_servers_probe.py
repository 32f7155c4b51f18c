"""Real servers' habits, against test doubles of their HTTP surfaces (tests/mock_servers.py)
and the scripted model (a stand-in for an LLM): start-up probe, roles, per-try accounting,
structured-output refusals, context overflow, in-flight dedupe."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import read_log
from hpcagents.core.artifacts import REPO_DIR, validate
from hpcagents.llm.accounting import per_server
from hpcagents.llm.interface import LLMUnavailable, PromptTooLong
from hpcagents.llm.pool import LLMPool
from hpcagents.llm.probe import ServerState, check_servers, probe
from hpcagents.scripted import serve
from hpcagents.spec.config import ConfigError, LLMConfig, RoleConfig, ServerConfig, parse_config
from mock_servers import MockServer, flock_waiters, gate_answers

DEFAULT = yaml.safe_load((REPO_DIR / "config" / "config.yaml").read_text())
PM = [
    {
        "role": "user",
        "content": "Kernel: dgemm\nIteration: 1\nStrategies wanted: 2\n",
    }
]
PG = [
    {
        "role": "user",
        "content": "Kernel: dgemm\nIteration: 1\nPG: 1\nAttempt: 0\nStrategy: loop_reorder\n",
    }
]
SCHEMA = json.loads((REPO_DIR / "workflow/schemas/pm_answer.schema.json").read_text())


@pytest.fixture
def mocks():
    started: list[MockServer] = []

    def start(**kwargs) -> MockServer:
        m = MockServer(**kwargs)
        started.append(m)
        return m

    yield start
    for m in started:
        m.shutdown()


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def campaign(tmp_path: Path, servers: list[dict], **llm) -> object:
    raw = copy.deepcopy(DEFAULT)
    raw["llm"]["servers"] = servers
    raw["llm"].update(llm)
    cfg = parse_config(raw)
    return replace(cfg, llm=replace(cfg.llm, state_dir=tmp_path / "state"))


def llm_cfg(tmp_path: Path, servers: tuple[ServerConfig, ...], **kw) -> LLMConfig:
    base = {
        "temperature": 0.0,
        "max_tokens": 1024,
        "max_retries": 1,
        "max_reasks": 0,
        "cache_dir": tmp_path / "cache",
        "state_dir": tmp_path / "state",
    }
    base.update(kw)
    return LLMConfig(servers=servers, **base)


# -- the start-up probe ---------------------------------------------------------------


def test_vllm_probe_finds_model_context_structured_output_and_reasoning(tmp_path, mocks):
    vllm = mocks(kind="vllm", model="openai/gpt-oss-120b", context=65536, reasoning=True)
    caps = probe(ServerConfig("gpu1", vllm.url, "openai/gpt-oss-120b"))
    assert caps.usable and caps.reachable and caps.kind == "vllm"
    assert caps.model_present and caps.models == ["openai/gpt-oss-120b"]
    assert (caps.context_tokens, caps.context_source) == (65536, "/v1/models max_model_len")
    assert caps.structured_output == "json_schema" and caps.reasoning == "separate"


def test_wrong_model_name_stops_the_start_listing_what_the_server_offers(tmp_path, mocks):
    vllm = mocks(kind="vllm", model="openai/gpt-oss-120b")
    cfg = campaign(tmp_path, [{"name": "gpu1", "base_url": vllm.url, "model": "gpt-oss-120b"}])
    with pytest.raises(ConfigError) as err:
        check_servers(cfg)
    msg = str(err.value)
    assert "server 'gpu1'" in msg and "model 'gpt-oss-120b' is not served" in msg
    assert "it offers: openai/gpt-oss-120b" in msg and ".." not in msg
    assert not vllm.chat_requests(), "nothing was sent to the wrong model"


def test_a_server_with_a_wrong_model_is_left_out_when_others_remain(tmp_path, mocks):
    good = mocks(kind="vllm", model="qwen-coder")
    wrong = mocks(kind="vllm", model="qwen-coder")
    cfg = campaign(
        tmp_path,
        [
            {"name": "good", "base_url": good.url, "model": "qwen-coder"},
            {"name": "wrong", "base_url": wrong.url, "model": "qwen-coder-typo"},
        ],
    )
    warnings = check_servers(cfg)
    assert any("left out" in w and "'wrong'" in w and "qwen-coder-typo" in w for w in warnings)
    pool = LLMPool(cfg.llm)
    assert [s.name for s in pool.order(1, "pg")] == ["good"]
    result = pool.chat(PG, index=1, seed=1, role="pg")
    assert result.server == "good" and not result.failover and not wrong.chat_requests()


def test_unset_api_key_variable_is_named_at_start(tmp_path, mocks, monkeypatch):
    monkeypatch.delenv("HPCAGENTS_TEST_KEY", raising=False)
    server = mocks(kind="vllm", model="m", api_key="sekret")
    one = [
        {"name": "gpu1", "base_url": server.url, "model": "m", "api_key_env": "HPCAGENTS_TEST_KEY"}
    ]
    with pytest.raises(ConfigError, match=r"HPCAGENTS_TEST_KEY.*unset"):
        check_servers(campaign(tmp_path, one))
    other = mocks(kind="vllm", model="m")
    two = one + [{"name": "gpu2", "base_url": other.url, "model": "m"}]
    warnings = check_servers(campaign(tmp_path, two))
    assert any("left out" in w and "HPCAGENTS_TEST_KEY" in w for w in warnings)
    monkeypatch.setenv("HPCAGENTS_TEST_KEY", "sekret")
    assert probe(campaign(tmp_path, one).llm.servers[0]).usable


def test_base_url_without_v1_gets_the_right_url(tmp_path, mocks):
    server = mocks(kind="vllm", model="m")
    # refused when the config is read, before any server is asked, with the URL to write
    with pytest.raises(ConfigError, match=rf"does not end in /v1.*write '{server.root}/v1'"):
        campaign(tmp_path, [{"name": "gpu1", "base_url": server.root, "model": "m"}])


def test_ollama_context_comes_from_api_show(tmp_path, mocks):
    ollama = mocks(kind="ollama", model="qwen2.5-coder:32b", num_ctx=16384)
    caps = probe(ServerConfig("ws", ollama.url, "qwen2.5-coder:32b"))
    assert caps.kind == "ollama" and caps.context_tokens == 16384
    default = mocks(kind="ollama", model="qwen2.5-coder:32b", num_ctx=None)
    caps = probe(ServerConfig("ws", default.url, "qwen2.5-coder:32b"))
    assert caps.context_tokens == 4096 and any("default num_ctx" in n for n in caps.notes)


def test_probe_is_remembered_and_not_repeated(tmp_path, start_scripted):
    server = start_scripted()
    cfg = campaign(tmp_path, [{"name": "s", "base_url": server.url, "model": "scripted-stand-in"}])
    check_servers(cfg)
    state = json.loads((tmp_path / "state" / "s.json").read_text())
    assert state["structured_output"] == "json_schema" and state["kind"] == "scripted-stand-in"
    asked = len(read_log(server.log_path))
    check_servers(cfg)  # a resumed campaign: GETs again, but no chat request
    assert len(read_log(server.log_path)) == asked == 1


# -- structured output, JSON, context -----------------------------------------------


def test_llama_cpp_python_500_refusal_steps_down_without_retries(tmp_path, mocks):
    srv = mocks(kind="llama-cpp-python", model="local", raw_newlines_in_json=True)
    caps = probe(ServerConfig("lcp", srv.url, "local"))
    assert caps.structured_output == "json_object" and caps.context_tokens is None
    assert any("context_tokens" in n for n in caps.notes)
    # without the probe's knowledge, the first PM call learns it: once, no retry, no backoff
    cfg = llm_cfg(tmp_path, (ServerConfig("lcp", srv.url, "local"),), max_retries=3)
    result = LLMPool(cfg).chat(PM, index=0, seed=1, json_schema=SCHEMA, role="pm")
    assert [t["outcome"] for t in result.tries] == ["format_refused", "ok"]
    assert result.response_format == "json_object" and result.retries == 0
    again = LLMPool(cfg).chat(PM, index=0, seed=2, json_schema=SCHEMA, role="pm")
    assert [t["outcome"] for t in again.tries] == ["ok"]
    assert [r["response_format"] for r in srv.chat_requests()[-3:]] == [
        "json_schema",
        "json_object",
        "json_object",
    ]
    # the answer has a raw line break inside a JSON string: parsed leniently, then valid
    from hpcagents.llm.agents import check_plan
    from hpcagents.llm.extract import extract_json

    assert "In short:\n" in result.text
    assert len(check_plan(extract_json(result.text), 2)) == 2


def test_context_overflow_error_is_recognised_learned_and_failed_over(tmp_path, mocks):
    small = mocks(kind="vllm", model="m", context=600, advertise_context=False)
    big = mocks(kind="vllm", model="m", context=32768)
    long_pg = [{**PG[0], "content": PG[0]["content"] + "x" * 4000}]
    # alone: a failed attempt with the right advice, not "rerun once a server is up"
    cfg = llm_cfg(tmp_path, (ServerConfig("small", small.url, "m"),), max_tokens=256)
    with pytest.raises(PromptTooLong) as err:
        LLMPool(cfg).chat(long_pg, index=0, seed=1)
    assert "maximum context length is 600" in str(err.value)
    assert "context_tokens" in str(err.value) and "rerun" not in str(err.value).lower()
    assert json.loads((tmp_path / "state" / "small.json").read_text())["context_tokens"] == 600
    # learned: the next request that cannot fit is not sent at all
    sent = len(small.chat_requests())
    with pytest.raises(PromptTooLong, match="not sent"):
        LLMPool(cfg).chat(long_pg, index=0, seed=2)
    assert len(small.chat_requests()) == sent
    # beside a server with room: failover
    two = llm_cfg(
        tmp_path / "two",
        (ServerConfig("small", small.url, "m"), ServerConfig("big", big.url, "m")),
        max_tokens=256,
    )
    result = LLMPool(two).chat(long_pg, index=0, seed=3)
    assert result.server == "big" and result.failover
    assert result.tries[0]["outcome"] == "context"


def test_max_tokens_as_large_as_the_context_still_leaves_the_prompt_room(tmp_path, mocks):
    srv = mocks(kind="vllm", model="m", context=4096)
    cfg = llm_cfg(
        tmp_path, (ServerConfig("s", srv.url, "m", context_tokens=4096),), max_tokens=8192
    )
    pool = LLMPool(cfg)
    assert pool.prompt_budget(0) == 4096 - 2048 - 256
    result = pool.chat(PG, index=0, seed=1)
    assert result.server == "s"
    assert srv.chat_requests()[-1]["max_tokens"] < 4096  # the completion was fitted


def test_a_runaway_answer_is_cut_before_it_is_stored(tmp_path, mocks):
    from hpcagents.llm.interface import MAX_ANSWER_CHARS

    srv = mocks(kind="vllm", model="m", answer_padding=1_200_000)
    cfg = llm_cfg(tmp_path, (ServerConfig("s", srv.url, "m"),))
    result = LLMPool(cfg).chat(PG, index=0, seed=1)
    assert len(result.text) == MAX_ANSWER_CHARS and result.answer_cut_chars > 1_000_000
    assert "kernel_dgemm" in result.text  # the code came first and is kept
    stored = sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*.json"))
    assert stored < 2 * MAX_ANSWER_CHARS


# -- roles -----------------------------------------------------------------------------


def test_roles_route_requests_and_carry_their_own_sampling(tmp_path, mocks):
    planner = mocks(kind="vllm", model="big", reasoning=True)
    coder = mocks(kind="vllm", model="coder")
    cfg = llm_cfg(
        tmp_path,
        (
            ServerConfig("planner", planner.url, "big", roles=("pm",)),
            ServerConfig("coder", coder.url, "coder", roles=("pg",)),
        ),
        roles={
            "pm": RoleConfig(temperature=0.9, max_tokens=2000, reasoning_effort="high"),
            "pg": RoleConfig(temperature=0.1),
        },
    )
    pool = LLMPool(cfg)
    plan = pool.chat(PM, index=0, seed=1, json_schema=SCHEMA, role="pm")
    code = pool.chat(PG, index=0, seed=1, role="pg")
    assert (plan.server, plan.role, code.server, code.role) == ("planner", "pm", "coder", "pg")
    assert plan.reasoning and plan.reasoning_tokens > 0 and "kernel_dgemm" in code.text
    p, c = planner.chat_requests()[-1], coder.chat_requests()[-1]
    assert (p["temperature"], p["max_tokens"], p["reasoning_effort"]) == (0.9, 2000, "high")
    assert (c["temperature"], c["max_tokens"], c["reasoning_effort"]) == (0.1, 1024, None)
    validate({**plan.record(), "prompt_sha256": "x"}, "llm_call")


def test_pm_server_down_never_fails_over_to_a_coder_server(tmp_path, mocks):
    coder = mocks(kind="vllm", model="coder")
    cfg = llm_cfg(
        tmp_path,
        (
            ServerConfig("planner", dead_url(), "big", roles=("pm",)),
            ServerConfig("coder", coder.url, "coder", roles=("pg",)),
        ),
        max_retries=0,
    )
    with pytest.raises(LLMUnavailable, match=r"for the PM: planner:.*[Rr]erun to resume"):
        LLMPool(cfg).chat(PM, index=0, seed=1, json_schema=SCHEMA, role="pm")
    assert not coder.chat_requests()


def test_a_role_without_a_server_is_a_config_error():
    raw = copy.deepcopy(DEFAULT)
    raw["llm"]["servers"][0]["roles"] = ["pg"]
    with pytest.raises(ConfigError, match=r"no server serves the role 'pm'"):
        parse_config(raw)


# -- accounting ------------------------------------------------------------------------


def test_time_lost_on_a_failing_server_is_charged_to_it(tmp_path, start_scripted):
    good = start_scripted(name="good")
    failing = serve(port=0, faults=("http500",), fault_every=1)
    try:
        cfg = llm_cfg(
            tmp_path,
            (
                ServerConfig("failing", failing.url, "scripted-stand-in"),
                ServerConfig("good", good.url, "scripted-stand-in"),
            ),
            max_retries=2,
        )
        result = LLMPool(cfg).chat(PG, index=0, seed=1)
    finally:
        failing.shutdown()
    assert [t["server"] for t in result.tries] == ["failing"] * 3 + ["good"]
    assert result.retries == 3 and result.failover
    acc = per_server([result.record()])
    assert acc["failing"]["failed_tries"] == 3 and acc["failing"]["calls"] == 0
    assert acc["failing"]["failovers_out"] == 1 and acc["good"]["failovers_in"] == 1
    assert acc["failing"]["lost_s"] >= acc["failing"]["backoff_s"] > 0
    assert acc["good"]["answer_s"] > 0 and acc["good"]["lost_s"] == 0
    cached = LLMPool(cfg).chat(PG, index=0, seed=1)
    assert per_server([cached.record()])["good"] == {
        **acc["good"],
        "cached_calls": 1,
        "answer_s": 0.0,
        "tries": 0,
        "failovers_in": 0,
    }


def test_accounting_reads_records_older_than_per_try_accounting():
    old = {
        "server": "a",
        "cached": False,
        "latency_s": 2.0,
        "started_at": 10.0,
        "ended_at": 12.5,
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "reasoning_tokens": 0,
    }
    acc = per_server([old])
    assert (
        acc["a"]["answer_s"] == 2.5
        and acc["a"]["tries"] == 1
        and acc["a"]["completion_tokens"] == 7
    )


def test_a_timeout_moves_on_at_once_and_is_retried_only_on_the_last_server(tmp_path):
    hung = serve(
        port=0, log_path=tmp_path / "hung.jsonl", faults=("hang",), fault_every=1, hang_s=30
    )
    good = serve(port=0)
    try:
        servers = (
            ServerConfig("hung", hung.url, "scripted-stand-in", timeout_s=1),
            ServerConfig("good", good.url, "scripted-stand-in", timeout_s=1),
        )
        result = LLMPool(llm_cfg(tmp_path, servers, timeout_retries=3)).chat(PG, index=0, seed=1)
        assert [(t["server"], t["outcome"]) for t in result.tries] == [
            ("hung", "timeout"),
            ("good", "ok"),
        ]
        alone = llm_cfg(tmp_path / "alone", servers[:1], timeout_retries=1)
        with pytest.raises(LLMUnavailable, match="Timeout"):
            LLMPool(alone).chat(PG, index=0, seed=1)
    finally:
        hung.shutdown()
        good.shutdown()
    # one timeout while "good" remained, then 1 + timeout_retries tries when alone
    assert [e["fault"] for e in read_log(tmp_path / "hung.jsonl")] == ["hang"] * 3


# -- resume never pays twice -----------------------------------------------------------


def _ask_in_process(args):
    url, cache, out = args
    cfg = LLMConfig(
        servers=(ServerConfig("s", url, "scripted-stand-in"),),
        temperature=0.0,
        max_tokens=1024,
        max_retries=0,
        max_reasks=0,
        cache_dir=Path(cache),
    )
    result = LLMPool(cfg).chat(PG, index=0, seed=5)
    Path(out).write_text(
        json.dumps(
            {
                "cached": result.cached,
                "text": result.text,
                "inflight_wait_s": result.inflight_wait_s,
            }
        )
    )


def test_an_identical_request_in_flight_is_waited_for_not_sent_again(tmp_path, start_scripted):
    server = start_scripted()
    gate = threading.Event()
    gate_answers(server, gate)  # the first request stays in flight until the gate opens
    ctx = multiprocessing.get_context("spawn")

    def ask(i: int):
        p = ctx.Process(
            target=_ask_in_process, args=((server.url, tmp_path / "cache", tmp_path / f"{i}.json"),)
        )
        p.start()
        return p

    first = ask(0)
    deadline = time.monotonic() + 60
    while not server._inflight:  # the first request has reached the server
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (lock,) = (tmp_path / "cache" / ".inflight").glob("*.lock")
    second = ask(1)
    while not flock_waiters(lock):  # the second one waits on the first one's lock
        assert time.monotonic() < deadline and second.is_alive()
        time.sleep(0.02)
    gate.set()
    first.join(60)
    second.join(60)
    assert first.exitcode == 0 and second.exitcode == 0
    answers = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    assert len(read_log(server.log_path)) == 1, "the prompt was sent once"
    assert answers[0]["text"] == answers[1]["text"]
    assert [a["cached"] for a in answers] == [False, True]
    assert answers[1]["inflight_wait_s"] > 0


def test_a_killed_senders_lock_blocks_nobody(tmp_path, start_scripted):
    server = start_scripted(latency=3.0)
    ctx = multiprocessing.get_context("spawn")
    victim = ctx.Process(
        target=_ask_in_process, args=((server.url, tmp_path / "cache", tmp_path / "v.json"),)
    )
    victim.start()
    deadline = time.monotonic() + 30
    while not read_log(server.log_path) and time.monotonic() < deadline:
        time.sleep(0.05)  # the victim's request is in flight (logged when answered: wait)
        if list((tmp_path / "cache" / ".inflight").glob("*.lock")):
            break
    time.sleep(0.3)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    server.latency = 0.05
    resumed = threading.Thread(
        target=_ask_in_process, args=((server.url, tmp_path / "cache", tmp_path / "r.json"),)
    )
    resumed.start()
    resumed.join(60)  # a lock left behind by the dead sender would block here for good
    assert not resumed.is_alive(), "the resumed request waited for a dead sender"
    assert json.loads((tmp_path / "r.json").read_text())["cached"] is False


def test_server_state_update_keeps_other_facts(tmp_path):
    s = ServerConfig("a", "http://x/v1", "m")
    state = ServerState(tmp_path)
    state.update(s, structured_output="none")
    state.update(s, context_tokens=4096)
    assert {
        k: ServerState(tmp_path).load(s)[k] for k in ("structured_output", "context_tokens")
    } == {
        "structured_output": "none",
        "context_tokens": 4096,
    }
    assert ServerState(tmp_path).load(replace(s, model="other")) == {}


# -- a campaign with a planner and coders ------------------------------------------------


@pytest.mark.slow
def test_campaign_with_a_reasoning_planner_coders_and_a_misnamed_server(
    tmp_path, mocks, start_scripted
):
    from conftest import campaign_config, run_snakemake, write_campaign
    from hpcagents.core.artifacts import read_json

    planner = mocks(kind="vllm", model="openai/gpt-oss-120b", reasoning=True)
    coder = start_scripted(name="coder")
    typo = mocks(kind="vllm", model="qwen-coder")
    raw = campaign_config(coder.url, **{"campaign.iterations": 1, "campaign.pgs": 2})
    raw["llm"]["servers"] = [
        {
            "name": "planner",
            "base_url": planner.url,
            "model": "openai/gpt-oss-120b",
            "roles": ["pm"],
        },
        {"name": "coder", "base_url": coder.url, "model": "scripted-stand-in", "roles": ["pg"]},
        {"name": "typo", "base_url": typo.url, "model": "qwen-coder-32b", "roles": ["pg"]},
    ]
    raw["llm"]["roles"] = {"pm": {"temperature": 0.9, "reasoning_effort": "high"}}
    workdir = tmp_path / "c"
    write_campaign(workdir, raw)
    proc = run_snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "left out of the campaign" in proc.stderr and "qwen-coder-32b" in proc.stderr
    res = workdir / "results/dgemm"
    plan = read_json(res / "iter1/plan.json", "plan")
    pm = plan["llm_calls"][0]
    assert (pm["server"], pm["role"], pm["response_format"]) == ("planner", "pm", "json_schema")
    assert pm["reasoning_tokens"] > 0 and pm["reasoning_chars"] > 0
    assert plan["context"]["budget_tokens"] == 32768 - 8192 - 256
    gens = [read_json(p, "generation") for p in res.glob("iter1/pg*/attempt*/generation.json")]
    assert gens and all(g["llm"]["server"] == "coder" and g["llm"]["role"] == "pg" for g in gens)
    assert not typo.chat_requests() and all(
        r["temperature"] == 0.9 for r in planner.chat_requests()[1:]
    )
    assert read_json(res / "summary.json", "summary")["rows"][-1]["valid"] >= 1


def test_a_server_that_just_hung_is_asked_last_then_again_once_it_answers(tmp_path):
    hung = serve(
        port=0, log_path=tmp_path / "hung.jsonl", faults=("hang",), fault_every=1, hang_s=30
    )
    good = serve(port=0)
    try:
        servers = (
            ServerConfig("hung", hung.url, "scripted-stand-in", timeout_s=1),
            ServerConfig("good", good.url, "scripted-stand-in", timeout_s=1),
        )
        cfg = llm_cfg(tmp_path, servers)
        first = LLMPool(cfg).chat(PG, index=0, seed=1)
        second = LLMPool(cfg).chat(PG, index=0, seed=2)  # another job: reads the state file
        assert [t["server"] for t in first.tries] == ["hung", "good"]
        assert [t["server"] for t in second.tries] == ["good"]
        assert second.failover and "hung: asked last" in second.errors[0]
        hung.faults = ()  # it recovers; once its hold is over it is asked first again
        ServerState(tmp_path / "state").update(servers[0], down_since=time.time() - 10)
        third = LLMPool(cfg).chat(PG, index=0, seed=3)
        assert third.server == "hung" and not third.failover
        assert "down_since" in json.loads((tmp_path / "state/hung.json").read_text())
        assert json.loads((tmp_path / "state/hung.json").read_text())["down_since"] is None
    finally:
        hung.shutdown()
        good.shutdown()


def test_a_server_that_lists_models_but_never_answers_is_marked_down_at_start(tmp_path):
    hung = serve(port=0, faults=("hang",), fault_every=1, hang_s=30)
    try:
        caps = probe(ServerConfig("hung", hung.url, "scripted-stand-in", timeout_s=1))
    finally:
        hung.shutdown()
    assert caps.usable and caps.reachable and caps.down_since
    assert caps.structured_output == "unknown" and any("inconclusive" in n for n in caps.notes)
