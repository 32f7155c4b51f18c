"""Prompts fit the server's context: history and error text are cut by rule, and recorded."""

from __future__ import annotations

from hpcagents.llm.agents import BuildInfo, Previous, estimate_tokens, fit_pg, fit_pm, pg_messages
from hpcagents.llm.pool import LLMPool
from hpcagents.spec.config import LLMConfig, ServerConfig
from hpcagents.spec.kernelspec import load_kernel

KERNEL = load_kernel("dgemm")
BUILD = BuildInfo(cc="gcc", cflags=("-O3",), cpu_model="test CPU", cores=2)
SOURCE = (KERNEL.directory / KERNEL.source).read_text()
SELECTED = {
    "iteration": 3,
    "pg": 1,
    "attempt": 0,
    "strategy": "packed_b",
    "gflops": 10.0,
    "pct_of_reference": 10.0,
    "reference_gflops": 100.0,
    "bench": {"m": 1, "n": 1, "k": 1},
}
HISTORY = [
    {
        "iteration": i // 4 + 1,
        "pg": i % 4 + 1,
        "strategy": f"strategy_{i}",
        "attempts": 1,
        "status": "compile_error",
        "reason": "x" * 150,
        "gflops": None,
        "pct_of_reference": None,
    }
    for i in range(40)
]
BEST = {"selected": SELECTED, "history": HISTORY}


def test_pm_history_is_cut_oldest_first_until_the_prompt_fits():
    full, ctx_full = fit_pm(KERNEL, BUILD, 4, 4, BEST, SOURCE, None)
    budget = estimate_tokens(full) - 1000
    fitted, ctx = fit_pm(KERNEL, BUILD, 4, 4, BEST, SOURCE, budget)
    assert ctx_full["history_entries_cut"] == 0
    assert ctx["fits"] and ctx["history_entries_cut"] > 0 and ctx["estimated_tokens"] <= budget
    text = fitted[-1]["content"]
    assert "strategy_39" in text and "strategy_0:" not in text  # newest kept, oldest cut
    assert f"({ctx['history_entries_cut']} older entries omitted)" in text


def test_repair_error_text_is_cut_keeping_its_head():
    error = "error: first and most useful line\n" + "noise\n" * 5000
    prev = Previous(status="compile_error", error=error, source=SOURCE)
    strategy = {"name": "s", "description": "d"}

    def build(chars: int):
        return pg_messages(KERNEL, BUILD, 1, 1, 1, strategy, BEST, SOURCE, prev, chars)

    budget = estimate_tokens(build(6000)) - 500
    messages, ctx = fit_pg(budget, build)
    assert ctx["fits"] and ctx["error_chars_kept"] < 6000
    assert "first and most useful line" in messages[-1]["content"]
    assert "chars cut]" in messages[-1]["content"]


def test_context_length_is_read_from_the_server(tmp_path, start_scripted):
    server = start_scripted()
    cfg = LLMConfig(
        servers=(ServerConfig("s", server.url, "scripted-stand-in"),),
        temperature=0,
        max_tokens=8192,
        max_retries=0,
        max_reasks=0,
        cache_dir=tmp_path,
    )
    assert LLMPool(cfg).prompt_budget(0) == 32768 - 8192 - 256
    fixed = LLMConfig(
        servers=(ServerConfig("s", server.url, "m", context_tokens=16384),),
        temperature=0,
        max_tokens=4096,
        max_retries=0,
        max_reasks=0,
        cache_dir=tmp_path,
    )
    assert LLMPool(fixed).prompt_budget(0) == 16384 - 4096 - 256


def test_a_prompt_that_cannot_fit_is_a_failed_attempt_never_sent(tmp_path, start_scripted):
    from hpcagents.llm.agents import run_pg

    server = start_scripted()
    cfg = LLMConfig(
        servers=(ServerConfig("s", server.url, "scripted-stand-in", context_tokens=600),),
        temperature=0,
        max_tokens=4096,
        max_retries=0,
        max_reasks=0,
        cache_dir=tmp_path,
    )
    prev = Previous(status="compile_error", error="error: x\n" * 100, source=SOURCE)
    messages = pg_messages(
        KERNEL, BUILD, 1, 1, 1, {"name": "s", "description": "d"}, BEST, SOURCE, prev
    )
    record = run_pg(LLMPool(cfg), KERNEL, messages, pg=1, seed=1, source_out=tmp_path / "c.c")
    assert record["status"] == "generation_error" and record["llm"] is None
    assert "does not fit the 600-token context of server 's'" in record["reason"]
    assert (tmp_path / "c.c").read_text() == "" and not server.log_path.exists()
