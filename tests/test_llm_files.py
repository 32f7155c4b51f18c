"""The file-queue backend (kind: files): requests as readable files, answers read from
files that a test thread writes (as a person or an air-gapped model would)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from hpcagents.llm.files import FileQueue, probe
from hpcagents.llm.interface import LLMUnavailable
from hpcagents.llm.pool import LLMPool
from hpcagents.llm.probe import check_servers
from hpcagents.spec.config import ConfigError, LLMConfig, ServerConfig, parse_config

REPO = Path(__file__).resolve().parents[1]

MESSAGES = [
    {"role": "system", "content": "You are an expert HPC programmer."},
    {"role": "user", "content": "## Your task\nWrite kernel_dgemm faster. Marker 7f3a."},
]


def files_pool(tmp_path: Path, timeout_s: float = 20.0, offline: bool = False) -> LLMPool:
    queue = tmp_path / "queue"
    server = ServerConfig(
        name="desk",
        base_url=f"files://{queue}",
        model="a-person",
        timeout_s=timeout_s,
        kind="files",
        queue_dir=queue,
        poll_s=0.05,
    )
    cfg = LLMConfig(
        servers=(server,),
        temperature=0.0,
        max_tokens=4096,
        max_retries=0,
        max_reasks=1,
        cache_dir=tmp_path / "cache",
        offline=offline,
    )
    return LLMPool(cfg)


def put(path: Path, text: str) -> None:
    """Write as the documented protocol asks: another name first, then rename."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


class Answerer(threading.Thread):
    """Answers every request in the queue: ``reply(request_json) -> (suffix, text)``."""

    def __init__(self, queue: Path, reply, limit: int = 100) -> None:
        super().__init__(daemon=True)
        self.queue, self.reply, self.limit = queue, reply, limit
        self.seen: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.seen) < self.limit:
            for req in sorted(self.queue.glob("*.request.json")) if self.queue.is_dir() else []:
                rid = req.name[: -len(".request.json")]
                if any(s["id"] == rid for s in self.seen):
                    continue
                data = json.loads(req.read_text())
                self.seen.append(data)
                suffix, text = self.reply(data)
                put(self.queue / f"{rid}{suffix}", text)
            time.sleep(0.02)


def test_request_is_a_readable_prompt_file_and_a_plain_text_answer_is_the_reply(tmp_path):
    pool = files_pool(tmp_path)
    queue = tmp_path / "queue"
    bodies: list[str] = []

    def reply(data):
        md = (queue / f"{data['id']}.request.md").read_text()
        bodies.append(md)
        return ".answer.md", "```c\nvoid kernel_dgemm(void) {}\n```\n"

    answerer = Answerer(queue, reply)
    answerer.start()
    result = pool.chat(MESSAGES, index=0, seed=3, role="pg")
    answerer.stop.set()
    assert result.text == "```c\nvoid kernel_dgemm(void) {}\n```\n"
    assert result.server == "desk" and result.base_url == f"files://{queue}"
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.tokens_estimated  # a plain-text answer carries no counts: said so
    md = bodies[0]
    # everything a person needs: role, where to answer, parameters, every message in full
    assert "(PG)" in md and f"{answerer.seen[0]['id']}.answer.md" in md
    assert "seed: 3" in md and "You are an expert HPC programmer." in md
    assert "Marker 7f3a." in md and "===== message 2: user =====" in md
    data = answerer.seen[0]
    assert data["messages"] == MESSAGES and data["params"]["seed"] == 3
    # answered: both files moved to answered/, none left waiting
    assert not list(queue.glob("*.request.*"))
    assert sorted(p.name.split(".", 1)[1] for p in (queue / "answered").iterdir()) == [
        "answer.md",
        "request.json",
        "request.md",
    ]


def test_the_request_data_is_written_last_so_a_watcher_always_finds_the_prompt(
    tmp_path, monkeypatch
):
    import hpcagents.llm.files as files

    queue = tmp_path / "queue"
    seen: list[bool] = []
    real = files.write_json

    def write_json(path, data):
        if str(path).endswith(".request.json"):
            seen.append((queue / f"{data['id']}.request.md").is_file())
        return real(path, data)

    monkeypatch.setattr(files, "write_json", write_json)
    answerer = Answerer(queue, lambda _: (".answer.md", "plan"))
    answerer.start()
    files_pool(tmp_path).chat(MESSAGES, index=0, seed=5, role="pm")
    answerer.stop.set()
    assert seen == [True]


def test_json_answers_in_both_documented_forms_carry_their_token_counts(tmp_path):
    pool = files_pool(tmp_path)
    queue = tmp_path / "queue"
    forms = iter(
        [
            {
                "content": "plan A",
                "model": "qwen-offline",
                "prompt_tokens": 11,
                "completion_tokens": 5,
            },
            {
                "model": "gpt-oss-120b",
                "choices": [
                    {
                        "message": {"content": "plan B", "reasoning_content": "think"},
                        "finish_reason": "length",
                    }
                ],
                "usage": {"prompt_tokens": 21, "completion_tokens": 9},
            },
        ]
    )
    answerer = Answerer(queue, lambda _: (".answer.json", json.dumps(next(forms))))
    answerer.start()
    a = pool.chat(MESSAGES, index=0, seed=1, role="pm")
    b = pool.chat(MESSAGES, index=0, seed=2, role="pm")
    answerer.stop.set()
    assert (a.text, a.model, a.prompt_tokens, a.completion_tokens) == (
        "plan A",
        "qwen-offline",
        11,
        5,
    )
    assert (b.text, b.reasoning, b.finish_reason) == ("plan B", "think", "length")
    assert (b.model, b.prompt_tokens, b.completion_tokens) == ("gpt-oss-120b", 21, 9)
    assert not a.tokens_estimated and not b.tokens_estimated
    assert answerer.seen[0]["id"].startswith("pm-")


def test_an_unanswered_request_stops_clearly_and_a_rerun_resumes_without_asking_twice(tmp_path):
    queue = tmp_path / "queue"
    with pytest.raises(LLMUnavailable) as stop:
        files_pool(tmp_path, timeout_s=0.5).chat(MESSAGES, index=0, seed=1)
    message = str(stop.value)
    (request,) = queue.glob("*.request.md")
    rid = request.name[: -len(".request.md")]
    assert str(request) in message and "rerun" in message
    first_written = json.loads((queue / f"{rid}.request.json").read_text())["created_at"]
    # the person answers while nothing runs; the rerun finds the answer at once
    put(queue / f"{rid}.answer.md", "the answer")
    time.sleep(0.6)  # the answer file settles
    resumed = files_pool(tmp_path, timeout_s=0.5).chat(MESSAGES, index=0, seed=1)
    assert resumed.text == "the answer" and resumed.cached is False
    # the request was not rewritten: its latency runs from its first writing
    archived = json.loads((queue / "answered" / f"{rid}.request.json").read_text())
    assert archived["created_at"] == first_written
    answered_at = (queue / "answered" / f"{rid}.answer.md").stat().st_mtime
    assert resumed.latency_s == pytest.approx(answered_at - first_written, abs=1e-3)
    # a third run replays from the response cache: no request file appears
    again = files_pool(tmp_path, timeout_s=0.5).chat(MESSAGES, index=0, seed=1)
    assert again.cached is True and again.text == "the answer"
    assert not list(queue.glob("*.request.*"))


def test_a_bad_json_answer_is_set_aside_with_the_reason_and_a_new_answer_is_used(tmp_path):
    pool = files_pool(tmp_path)
    queue = tmp_path / "queue"
    answers = iter([(".answer.json", "{not json"), (".answer.md", "fixed")])
    problems: list[str] = []

    def reply(data):
        return next(answers)

    answerer = Answerer(queue, reply)
    answerer.start()

    def second_answer():
        # wait for the rejection note, then answer again (as the person would)
        while not list(queue.glob("*.problem.txt")):
            time.sleep(0.02)
        problem = next(queue.glob("*.problem.txt"))
        problems.append(problem.read_text())
        rid = problem.name[: -len(".problem.txt")]
        put(queue / f"{rid}.answer.md", next(answers)[1])

    fixer = threading.Thread(target=second_answer, daemon=True)
    fixer.start()
    result = pool.chat(MESSAGES, index=0, seed=5)
    answerer.stop.set()
    assert result.text == "fixed"
    assert "not valid JSON" in problems[0]
    assert any("set aside" in e for e in result.errors)
    assert list((queue / "answered").glob("*.answer.json.rejected"))


def test_parallel_requests_each_get_their_own_answer(tmp_path):
    queue = tmp_path / "queue"
    answerer = Answerer(
        queue, lambda data: (".answer.md", "reply to " + data["messages"][1]["content"][-6:])
    )
    answerer.start()
    results: dict[int, str] = {}

    def one(pg: int) -> None:
        msgs = [MESSAGES[0], {"role": "user", "content": f"PG number {pg:06d}"}]
        results[pg] = files_pool(tmp_path).chat(msgs, index=pg, seed=pg).text

    threads = [threading.Thread(target=one, args=(pg,)) for pg in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    answerer.stop.set()
    assert results == {pg: f"reply to {pg:06d}" for pg in range(1, 5)}
    assert len(answerer.seen) == 4


def test_config_accepts_a_file_queue_and_names_what_a_mixed_up_entry_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["llm"]["servers"] = [
        {"name": "desk", "kind": "files", "queue_dir": "q", "model": "person", "timeout_s": 60}
    ]
    server = parse_config(raw).llm.servers[0]
    assert server.kind == "files" and server.queue_dir == tmp_path / "q"
    assert server.base_url == f"files://{tmp_path / 'q'}"
    assert "base_url" not in raw["llm"]["servers"][0]  # the user's config is not changed
    raw["llm"]["servers"][0]["base_url"] = "http://127.0.0.1:1/v1"
    with pytest.raises(ConfigError, match="drop base_url"):
        parse_config(raw)
    raw["llm"]["servers"] = [
        {"name": "d", "model": "m", "queue_dir": "q", "base_url": "http://h/v1"}
    ]
    with pytest.raises(ConfigError, match="add kind: files"):
        parse_config(raw)
    raw["llm"]["servers"] = [{"name": "d", "kind": "files", "model": "m"}]
    with pytest.raises(ConfigError, match="queue_dir"):
        parse_config(raw)


def test_probe_makes_the_queue_and_refuses_one_it_cannot_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["llm"]["servers"] = [{"name": "desk", "kind": "files", "queue_dir": "q", "model": "p"}]
    cfg = parse_config(raw)
    warnings = check_servers(cfg)
    assert (tmp_path / "q" / "README.txt").is_file()
    assert any("file queue" in w for w in warnings)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    bad = ServerConfig("x", f"files://{blocker}/q", "m", kind="files", queue_dir=blocker / "q")
    caps = probe(bad)
    assert caps.usable is False and "cannot be written" in caps.reason


def test_pending_lists_waiting_requests_oldest_first(tmp_path):
    queue = FileQueue(tmp_path / "q")
    server = ServerConfig("desk", "files://x", "m", kind="files", queue_dir=tmp_path / "q")
    queue.submit("pg-a", "pg", server, MESSAGES, {"seed": 1})
    time.sleep(0.02)
    queue.submit("pg-b", "pg", server, MESSAGES, {"seed": 2})
    assert queue.pending() == ["pg-a", "pg-b"]


def test_a_campaign_stops_at_an_unanswered_queue_and_a_rerun_completes_once_answered(tmp_path):
    """2 PGs, 1 iteration, the LLM a file queue: the first run stops at the PM's waiting
    request with its file named; once a thread answers (the scripted model, a stand-in
    for a person), the rerun completes, every answer reaches its generation.json, and
    nothing is asked twice."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import campaign_config, run_snakemake, write_campaign
    from files_answerer import MODEL, serve

    raw = campaign_config("http://unused/v1")
    raw["campaign"].update(iterations=1, pgs=2, max_repairs=1)
    raw["evaluation"].update(bench_size=96, repeats=1, warmup=0, timeout_s=300)
    server = {"name": "desk", "kind": "files", "queue_dir": "llm-queue", "model": "a-person"}
    raw["llm"]["servers"] = [{**server, "timeout_s": 2, "poll_s": 0.2}]
    write_campaign(tmp_path, raw)
    first = run_snakemake(tmp_path, "--cores", "2")
    assert first.returncode != 0
    queue = tmp_path / "llm-queue"
    (waiting,) = queue.glob("pm-*.request.md")
    assert str(waiting) in first.stdout + first.stderr
    raw["llm"]["servers"] = [{**server, "timeout_s": 300, "poll_s": 0.2}]
    write_campaign(tmp_path, raw)
    stop, answered = threading.Event(), []
    answerer = threading.Thread(target=serve, args=(queue, stop), kwargs={"answered": answered})
    answerer.start()
    try:
        second = run_snakemake(tmp_path, "--cores", "2")
    finally:
        stop.set()
        answerer.join(timeout=10)
    assert second.returncode == 0, second.stderr[-3000:]
    assert waiting.name.replace(".request.md", "") in answered  # the same request, resumed
    gens = sorted((tmp_path / "results" / "dgemm" / "iter1").glob("pg*/attempt*/generation.json"))
    assert len(gens) >= 2
    for g in gens:
        llm = json.loads(g.read_text())["llm"]
        assert llm["server"] == "desk" and llm["model"] == MODEL
    assert len(answered) == len(set(answered)) == 1 + len(gens)  # one PM + one per attempt
    assert not list(queue.glob("*.request.*"))  # all moved to answered/
    summary = json.loads((tmp_path / "results" / "dgemm" / "summary.json").read_text())
    # the answerer gave no token counts: every call's tokens are said to be estimates
    totals = summary["totals"]
    assert totals["estimated_token_calls"] == totals["llm_calls"] == len(answered)
    assert summary["totals"]["per_server"]["desk"]["estimated_token_calls"] == len(answered)
    report = (tmp_path / "results" / "dgemm" / "report.md").read_text()
    assert f"the tokens of {len(answered)} of {len(answered)} LLM calls are estimates" in report
    # a PG's first attempt was shown the compiler's report on the version it starts from
    first_pg = [
        p.read_text()
        for p in (queue / "answered").glob("pg-*.request.md")
        if "Attempt: 0" in p.read_text()
    ]
    assert first_pg and all(
        "## What the compiler and the machine said about the current best" in t
        and "Compiler vectorisation report on this file" in t
        for t in first_pg
    )


def test_answer_queue_forwards_waiting_requests_to_a_server_and_the_pool_reads_them(
    tmp_path, start_scripted
):
    """The air-gapped side: a real HTTP server (the scripted model, a stand-in for an
    LLM) answers the queue through hpcagents.llm.answer_queue; the campaign's pool then
    reads the answer with the server's own token counts."""
    from hpcagents.llm.answer_queue import main as answer_queue

    server = start_scripted()
    prompt = [
        {"role": "system", "content": "You are an expert HPC programmer."},
        {
            "role": "user",
            "content": "Kernel: dgemm\nIteration: 1\nPG: 1\nAttempt: 0\n"
            "Strategy: loop_reorder\n\nWrite the file.",
        },
    ]
    with pytest.raises(LLMUnavailable):
        files_pool(tmp_path, timeout_s=0.2).chat(prompt, index=0, seed=1)
    queue = tmp_path / "queue"
    args = [str(queue), "--base-url", server.url, "--model", "scripted-stand-in"]
    assert answer_queue(args) == 0
    (answer_file,) = queue.glob("*.answer.json")
    time.sleep(0.6)  # settles
    result = files_pool(tmp_path, timeout_s=5).chat(prompt, index=0, seed=1)
    assert "kernel_dgemm" in result.text
    assert result.model == "scripted-stand-in" and result.completion_tokens > 0
    assert not any("estimated" in t["detail"] for t in result.tries)
    assert answer_queue(args) == 0  # nothing waiting: nothing sent again
    assert len(list(queue.glob("*.answer.json"))) == 0  # moved to answered/
