"""The final round: contenders re-timed side by side with the reference, every output
checked, under a real disturbance (a CPU hog started during the run)."""

from __future__ import annotations

import subprocess
import sys

from hpcagents.artifacts import REPO_DIR, validate
from hpcagents.evaluate import BuildConfig, EvalConfig
from hpcagents.finalround import final_round
from hpcagents.kernelspec import load_kernel

KERNEL = load_kernel("dgemm")
SCRIPTED = REPO_DIR / "kernels" / "dgemm" / "scripted"


def test_the_faster_kernel_stays_faster_under_a_cpu_hog(tmp_path):
    wrong = tmp_path / "wrong.c"
    wrong.write_text((SCRIPTED / "loop_reorder.c").read_text().replace("+= a *", "-= a *", 1))
    contenders = [
        ("naive", KERNEL.directory / "dgemm.c"),  # the baseline: >10x slower than packed_b
        ("packed_b", SCRIPTED / "packed_b.c"),
        ("wrong", wrong),
    ]
    hog = subprocess.Popen(  # a real disturbance: one core kept busy during the whole round
        [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 120: pass"]
    )
    try:
        rec = final_round(
            KERNEL,
            contenders,
            tmp_path / "final",
            BuildConfig(),
            EvalConfig(warmup=1, timeout_s=60, bench_size=384),
            rounds=4,
        )
    finally:
        hog.kill()
        hog.wait()
    validate(rec, "final_round")
    by = {c["label"]: c for c in rec["contenders"]}
    assert rec["status"] == "ok", rec["reason"]
    assert by["naive"]["status"] == by["packed_b"]["status"] == "ok"
    assert by["packed_b"]["best_s"] < by["naive"]["best_s"]
    assert by["packed_b"]["median_s"] < by["naive"]["median_s"]
    assert len(by["packed_b"]["runs_s"]) == 4 and rec["case"]["m"] == 384
    assert rec["reference"]["gflops"] > 0 and rec["reference"]["name"] == "mkl"
    # the wrong contender: its status, a reason naming the round, and no figure
    assert by["wrong"]["status"] == "wrong_answer" and "final round" in by["wrong"]["reason"]
    assert by["wrong"]["gflops"] is None and by["wrong"]["runs_s"] == []
    # interleaved: the order rotates, so each one leads some round
    firsts = {o[0] for o in rec["order"]}
    assert {"reference", "naive", "packed_b"} <= firsts


def test_a_contender_that_does_not_compile_gets_its_status_and_no_figure(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("void kernel_dgemm(void) { undeclared_x; }\n")
    rec = final_round(
        KERNEL,
        [("bad", bad), ("packed_b", SCRIPTED / "packed_b.c")],
        tmp_path / "final",
        BuildConfig(),
        EvalConfig(warmup=0, timeout_s=60, bench_size=64),
        rounds=2,
    )
    validate(rec, "final_round")
    bad_rec, good = rec["contenders"]
    assert bad_rec["status"] == "compile_error" and bad_rec["best_s"] is None
    assert good["status"] == "ok" and good["pct_of_reference"] > 0
