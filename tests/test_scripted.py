"""The scripted model (a stand-in for an LLM): its answers and its HTTP behaviour."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import yaml
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.judge.evaluate import evaluate_source
from hpcagents.judge.timing import BuildConfig, EvalConfig
from hpcagents.llm.extract import extract_code, extract_json
from hpcagents.scripted import OWNER, ScriptedModel
from hpcagents.spec.kernelspec import load_kernel
from openai import OpenAI

SCRIPT_DIR = REPO_DIR / "kernels" / "dgemm" / "scripted"
SCRIPT = yaml.safe_load((SCRIPT_DIR / "script.yaml").read_text())
ANSWERS = [(s["name"], a) for s in SCRIPT["strategies"] for a in s["answers"] if "file" in a]


def pm(iteration: int, n: int) -> list[dict[str, str]]:
    text = f"Kernel: dgemm\nIteration: {iteration}\nStrategies wanted: {n}\n"
    return [{"role": "user", "content": text}]


def pg(strategy: str, attempt: int) -> list[dict[str, str]]:
    text = f"Kernel: dgemm\nIteration: 1\nPG: 1\nAttempt: {attempt}\nStrategy: {strategy}\n"
    return [{"role": "user", "content": text}]


def test_pm_plans_n_distinct_strategies_that_change_per_iteration():
    model = ScriptedModel()
    plans = [extract_json(model.answer(pm(i, 4)).text)["strategies"] for i in (1, 2, 3)]
    names = [[s["name"] for s in p] for p in plans]
    assert all(len(set(n)) == 4 for n in names)
    assert names[0] != names[1] != names[2]


@pytest.mark.parametrize(("strategy", "answer"), ANSWERS, ids=[a["file"] for _, a in ANSWERS])
def test_every_scripted_file_behaves_as_declared(tmp_path, strategy, answer):
    """Honest variants pass the real harness (0 false rejections); broken ones fail as declared."""
    rec = evaluate_source(
        load_kernel("dgemm"),
        SCRIPT_DIR / answer["file"],
        tmp_path,
        BuildConfig(),
        EvalConfig(repeats=1, warmup=0, timeout_s=120, bench_size=96),
    )
    expected = {None: "ok", "compile": "compile_error", "wrong_answer": "wrong_answer"}
    assert rec["status"] == expected[answer.get("broken")], rec["reason"]


def test_repair_of_the_broken_compile_answer_returns_the_fixed_file():
    model = ScriptedModel()
    first = extract_code(model.answer(pg("register_blocking", 0)).text, "kernel_dgemm")
    second = extract_code(model.answer(pg("register_blocking", 1)).text, "kernel_dgemm")
    assert first.code != second.code
    assert second.code.strip() == (SCRIPT_DIR / "register_blocking.c").read_text().strip()


def test_prose_strategy_answers_without_code_then_with_code():
    model = ScriptedModel()
    assert extract_code(model.answer(pg("prefetch", 0)).text, "kernel_dgemm").status == "no_code"
    assert extract_code(model.answer(pg("prefetch", 1)).text, "kernel_dgemm").status == "ok"


def test_unknown_prompt_gets_a_polite_answer_without_code():
    ans = ScriptedModel().answer([{"role": "user", "content": "hello"}])
    assert ans.kind == "prose" and "stand-in" in ans.text and "```" not in ans.text


def test_http_models_endpoint_labels_the_stand_in(start_scripted):
    server = start_scripted()
    with urllib.request.urlopen(f"{server.url}/models") as resp:
        data = json.load(resp)["data"][0]
    assert data["owned_by"] == OWNER and "scripted" in data["id"]


def test_http_chat_stream_and_latency_and_log(start_scripted):
    server = start_scripted(latency=0.2)
    client = OpenAI(base_url=server.url, api_key="x", max_retries=0)
    start = time.monotonic()
    resp = client.chat.completions.create(model="m", messages=pg("loop_reorder", 0))
    assert time.monotonic() - start >= 0.2
    assert "kernel_dgemm" in resp.choices[0].message.content and resp.usage.completion_tokens > 0
    chunks = client.chat.completions.create(model="m", messages=pm(1, 2), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(extract_json(text)["strategies"]) == 2
    log = [json.loads(x) for x in server.log_path.read_text().splitlines()]
    assert [e["role"] for e in log] == ["pg", "pm"] and all(
        len(e["prompt_sha256"]) == 64 for e in log
    )


def test_http_malformed_body_is_a_400_not_a_crash(start_scripted):
    server = start_scripted()
    req = urllib.request.Request(
        f"{server.url}/chat/completions",
        data=b"{not json",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 400
    with urllib.request.urlopen(f"{server.url}/models") as resp:
        assert resp.status == 200
