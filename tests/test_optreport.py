"""The compiler's vectorisation report (a second sandboxed compile), hardware counters
from the judge's side, and how both reach the repair / PG prompts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hpcagents.campaign.feedback import feedback_block, feedback_text, scaling_text
from hpcagents.judge import hwcounters
from hpcagents.judge.evaluate import evaluate_source
from hpcagents.judge.optreport import MAX_CHARS, condense, optimisation_report, parse_gcc
from hpcagents.judge.timing import BuildConfig, EvalConfig
from hpcagents.llm.agents import BuildInfo, Previous, pg_messages
from hpcagents.spec.kernelspec import load_kernel

REPO = Path(__file__).resolve().parents[1]
FLAGS = ("-O3", "-march=native", "-fopenmp")
SIGNATURE = "void kernel_x(int n, double *restrict a, const double *restrict b)"

# line 3: a unit-stride loop GCC vectorises; line 5: a recurrence it cannot
CODE = """void kernel_x(int n, double *restrict a, const double *restrict b)
{
    for (int i = 0; i < n; i++) a[i] = 2.0 * b[i] + a[i];
    double s = 0.0;
    for (int i = 1; i < n; i++) { if (b[i] > s) break; a[i] = a[i - 1] * b[i]; }
}
"""


def test_report_says_which_loop_vectorised_with_which_size_and_why_the_other_did_not(tmp_path):
    rec = optimisation_report("x.c", CODE, SIGNATURE, tmp_path, "gcc", FLAGS)
    assert rec["status"] == "ok", rec["reason"]
    by_line = {n["line"]: n for n in rec["loops"]}
    assert by_line[3]["vectorized"] and by_line[3]["vector_bytes"]
    assert by_line[5]["vectorized"] is False and by_line[5]["reasons"]
    assert "loop at line 3: vectorised" in rec["text"]
    assert "loop at line 5: NOT vectorised" in rec["text"]
    assert "a[i] = 2.0 * b[i] + a[i];" in rec["text"]  # the loop's own line beside it
    # the report's compile writes no object: nothing of it can be linked or timed
    assert rec["command"][-2:] == ["-o", "/dev/null"] and "-S" in rec["command"]
    assert not list(tmp_path.glob("*.o")) and not list(tmp_path.glob("*.s"))


def test_report_compile_is_sandboxed_when_bubblewrap_works(tmp_path):
    from hpcagents.judge.sandbox import bwrap_status

    rec = optimisation_report("x.c", CODE, SIGNATURE, tmp_path, "gcc", FLAGS)
    assert rec["sandbox"] == ("bubblewrap" if bwrap_status()[0] else "rlimits")


def test_report_of_a_file_that_does_not_compile_is_a_failure_with_its_reason(tmp_path):
    rec = optimisation_report("x.c", "void kernel_x(", SIGNATURE, tmp_path, "gcc", FLAGS)
    assert rec["status"] == "failed" and "failed" in rec["reason"]


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang not installed")
def test_clang_remarks_are_read_too(tmp_path):
    rec = optimisation_report("x.c", CODE, SIGNATURE, tmp_path, "clang", ("-O3", "-march=native"))
    assert rec["status"] == "ok" and rec["compiler"] == "clang", rec["reason"]
    assert any(n["line"] == 3 and n["vectorized"] for n in rec["loops"])


GCC_OUTPUT = """\
k.c:7:23: missed: couldn't vectorize loop
k.c:7:23: missed: not vectorized: multiple nested loops.
k.c:30:31: missed: couldn't vectorize loop
k.c:31:17: missed: statement clobbers memory: memcpy (_22, _19, _10);
k.c:47:23: missed: couldn't vectorize loop
{HEADER}
 scalar_type: __m512d
k.c:42:64: optimized: loop vectorized using 64 byte vectors
k.c:42:64: optimized: loop vectorized using 32 byte vectors
{GOMP}
k.c:33:9: optimized: basic block part vectorized using 64 byte vectors
k.c:33:9: optimized: basic block part vectorized using 64 byte vectors
k.c:39:43: missed: couldn't vectorize loop
k.c:42:76: missed: failed: evolution of base is not affine.
k.c:4:6: note: vectorized 1 loops in function.
""".format(
    HEADER="/usr/lib/gcc/x86_64-linux-gnu/12/include/avx512fintrin.h:381:10: missed: not "
    "vectorized: no vectype for stmt: _80 = MEM[(__m512d * {ref-all})_4];",
    GOMP="k.c:12:6: missed: statement clobbers memory: __builtin_GOMP_parallel "
    "(kernel._omp_fn.0, &.omp_data_o.3, 0, 0);",
)


def test_gcc_output_is_condensed_per_loop_with_reasons_from_headers_attached():
    source = "\n".join(f"/* line {i} */" for i in range(1, 60))
    notes = {n.line: n for n in parse_gcc(GCC_OUTPUT, "k.c", source)}
    assert notes[7].nesting_only
    assert notes[30].reasons == ["calls memcpy() inside the loop"]
    assert notes[47].reasons == ["its statements are already vector intrinsics (__m512d)"]
    assert notes[42].vectorized and notes[42].vector_bytes == [64, 32]
    assert notes[33].kind == "slp" and notes[33].count == 2
    assert notes[39].reasons == ["evolution of base is not affine"]
    assert 12 not in notes  # an OpenMP runtime call is no loop
    text, truncated = condense(list(notes.values()))
    assert not truncated
    assert "loop at line 42: vectorised, 64-byte vectors (epilogue 32-byte)" in text
    assert text.splitlines()[-1].endswith("line(s) 7")
    assert "MEM[" not in text  # no GIMPLE dump (nor any header's text) reaches a prompt


def test_condensed_report_stays_bounded_on_a_file_with_hundreds_of_loops():
    output = "".join(
        f"k.c:{i}:5: missed: couldn't vectorize loop\nk.c:{i}:9: missed: not vectorized: "
        f"complicated access pattern number {i}.\n"
        for i in range(1, 400)
    )
    text, truncated = condense(parse_gcc(output, "k.c", ""))
    assert truncated and len(text) <= MAX_CHARS + 80
    assert "more" in text.splitlines()[-1]


def test_evaluation_records_the_report_and_the_timed_object_keeps_the_fixed_flags(tmp_path):
    kernel = load_kernel("dgemm")
    source = REPO / "kernels" / "dgemm" / "scripted" / "omp_simd.c"
    rec = evaluate_source(
        kernel,
        source,
        tmp_path / "w",
        BuildConfig("gcc", FLAGS),
        EvalConfig(repeats=1, warmup=0, bench_size=64, cpu_lock=False),
    )
    assert rec["status"] == "ok", rec["reason"]
    assert not any("opt-info" in a for a in rec["compile"]["command"])
    assert rec["optreport"]["status"] == "ok"
    assert rec["optreport"]["command"][: 1 + len(FLAGS)] == ["gcc", *FLAGS]
    assert "loop at line 21: vectorised" in rec["optreport"]["text"]
    counters = rec["timing"]["counters"]
    assert counters["calls"] == 1
    assert counters["available"] or counters["reason"]


def test_a_candidate_that_does_not_compile_has_no_report(tmp_path):
    kernel = load_kernel("dgemm")
    bad = tmp_path / "dgemm.c"
    bad.write_text("void kernel_dgemm(int m) { syntax error }\n")
    rec = evaluate_source(
        kernel, bad, tmp_path / "w", BuildConfig("gcc", FLAGS), EvalConfig(cpu_lock=False)
    )
    assert rec["status"] == "compile_error" and "optreport" not in rec
    assert feedback_text(rec) == ""


def _busy_child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def test_counters_attach_to_another_process_from_outside_it():
    """Software events need no PMU: they pin the open / enable / read path anywhere."""
    child = _busy_child()
    try:
        time.sleep(0.1)
        counters = hwcounters.Counters(child.pid, events=dict(hwcounters.SOFTWARE_EVENTS)).open()
        if not counters.ok:
            pytest.skip(f"perf_event_open not allowed here: {counters.reason}")
        counters.start()
        time.sleep(0.2)
        counters.stop()
        rec = counters.record(calls=2)
        counters.close()
    finally:
        child.kill()
        child.wait()
    assert rec["available"] and rec["per_call"]["task_clock_ns"] > 0
    assert rec["threads_counted"] >= 1


def test_hardware_counters_count_or_say_plainly_why_not():
    child = _busy_child()
    try:
        counters = hwcounters.Counters(child.pid).open()
        counters.start()
        time.sleep(0.1)
        counters.stop()
        rec = counters.record(calls=1)
        counters.close()
    finally:
        child.kill()
        child.wait()
    if rec["available"]:
        assert rec["per_call"]["cycles"] > 0 and rec["ipc"] > 0
    else:
        assert any(
            w in rec["reason"] for w in ("PMU", "perf_event_paranoid", "not available", "failed")
        )
    assert "hardware counters" in hwcounters.counters_text(rec)


EVALUATION = {
    "status": "wrong_answer",
    "optreport": {"status": "ok", "compiler": "gcc", "text": "loop at line 9: NOT vectorised: x"},
    "validation": {
        "cases": [
            {"label": "m=1 n=1", "call_s": 0.00002},
            {"label": "m=97 n=65", "call_s": 0.0011},
        ]
    },
    "timing": {"counters": {"available": False, "reason": "no PMU here", "calls": 3}},
}


def test_feedback_shows_the_report_the_time_per_size_and_the_counters():
    text = feedback_text(EVALUATION)
    assert "loop at line 9: NOT vectorised: x" in text
    assert "m=97 n=65: 1.100 ms" in text
    assert "not available on the timing node: no PMU here" in text
    # per-case times are optional: a record without them shows no scaling line
    no_times = {**EVALUATION, "validation": {"cases": [{"label": "m=1"}]}}
    assert scaling_text(no_times) == "" and "ms" not in feedback_text(no_times)


def test_the_repair_prompt_carries_the_previous_attempts_report():
    kernel = load_kernel("dgemm")
    build = BuildInfo("gcc", FLAGS, "test cpu", 2, 2)
    prev = Previous(
        status="wrong_answer",
        error="C[0][0] wrong",
        source="void kernel_dgemm(void) {}",
        feedback=feedback_block("What the compiler said about your previous attempt", EVALUATION),
    )
    best = {"selected": {"gflops": 1.0, "pct_of_reference": 10.0, "bench": {}}}
    strategy = {"name": "s", "description": "d"}
    user = pg_messages(kernel, build, 1, 1, 1, strategy, best, "", prev)[1]["content"]
    assert "## What the compiler said about your previous attempt" in user
    assert "loop at line 9: NOT vectorised: x" in user
    assert user.index("C[0][0] wrong") < user.index("loop at line 9")


def test_a_pg_starting_from_the_best_is_shown_the_best_evaluations_report(tmp_path):
    from hpcagents.campaign.feedback import best_feedback_block

    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(EVALUATION))
    block = best_feedback_block({"selected": {"evaluation": str(path)}})
    assert block.startswith("## What the compiler and the machine said about the current best")
    assert "loop at line 9: NOT vectorised: x" in block
    # a best whose evaluation is gone (or predates the report) shows nothing
    assert best_feedback_block({"selected": {"evaluation": str(tmp_path / "none.json")}}) == ""
