"""End to end: real Snakemake, real gcc and MKL, the scripted model on real HTTP.

The scripted model is a stand-in for an LLM; these tests measure the pipeline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    campaign_config,
    copy_kernel,
    read_log,
    run_snakemake,
    snakemake_cmd,
    write_campaign,
)
from hpcagents.artifacts import REPO_DIR, read_json
from hpcagents.scripted import serve

pytestmark = pytest.mark.slow


def selections(workdir: Path, iterations: int) -> list[tuple[int, int, str, int]]:
    out = []
    for i in range(iterations + 1):
        sel = read_json(workdir / "results" / "dgemm" / f"iter{i}" / "best.json", "best")[
            "selected"
        ]
        out.append((sel["iteration"], sel["pg"], sel["strategy"], sel["attempt"]))
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted campaign (2 iterations x 4 PGs), shared by the tests below."""
    root = tmp_path_factory.mktemp("reference")
    server = serve(host="127.0.0.1", port=0, log_path=root / "requests.jsonl", latency=0.05)
    try:
        workdir = root / "campaign"
        write_campaign(workdir, campaign_config(server.url))
        proc = run_snakemake(workdir)
        assert proc.returncode == 0, proc.stderr[-4000:]
        yield workdir, root / "requests.jsonl"
    finally:
        server.shutdown()


def test_campaign_completes_with_valid_summary_and_speedup(reference_run):
    workdir, _ = reference_run
    summary = read_json(workdir / "results" / "dgemm" / "summary.json", "summary")
    assert [r["iteration"] for r in summary["rows"]] == [0, 1, 2]
    assert summary["final"]["gflops"] > summary["baseline"]["gflops"]
    assert summary["speedup"] > 1.5
    assert summary["llm_servers"][0]["stand_in"] is True
    assert (workdir / "results" / "dgemm" / "report.md").read_text().count("\n") > 5


def test_at_least_one_repair_happened_and_succeeded(reference_run):
    workdir, _ = reference_run
    summary = read_json(workdir / "results" / "dgemm" / "summary.json", "summary")
    assert summary["totals"]["repairs_succeeded"] >= 1
    assert summary["totals"]["repairs"] >= summary["totals"]["repairs_succeeded"]


def _attempts(workdir: Path):
    for gen_path in sorted(
        (workdir / "results" / "dgemm").glob("iter*/pg*/attempt*/generation.json")
    ):
        gen = read_json(gen_path, "generation")
        ev = read_json(gen_path.parent / "evaluation.json", "evaluation")
        yield gen_path.parent, gen, ev


def test_compile_error_is_a_failed_attempt_with_compiler_output_then_repaired(reference_run):
    workdir, _ = reference_run
    failed = [(d, g, e) for d, g, e in _attempts(workdir) if e["status"] == "compile_error"]
    assert failed, "the scripted model's compile-error variant should have been tried"
    d, gen, ev = failed[0]
    assert "error" in ev["compile"]["output"]
    nxt = d.parent / f"attempt{gen['attempt'] + 1}"
    repair = read_json(nxt / "generation.json", "generation")
    assert repair["kind"] == "repair"
    assert read_json(nxt / "evaluation.json", "evaluation")["status"] == "ok"


def test_answer_without_code_is_a_failed_attempt_then_repaired(reference_run):
    workdir, _ = reference_run
    failed = [(d, g, e) for d, g, e in _attempts(workdir) if g["status"] == "no_code"]
    assert failed, "the scripted model's prose-only answer should have been tried"
    d, gen, ev = failed[0]
    assert ev["status"] == "no_code" and "no C code" in ev["reason"]
    assert (d / "dgemm.c").read_text() == ""
    nxt = d.parent / f"attempt{gen['attempt'] + 1}"
    assert read_json(nxt / "evaluation.json", "evaluation")["status"] == "ok"


def test_wrong_answer_is_repaired_with_the_harness_verdict(reference_run):
    workdir, _ = reference_run
    failed = [(d, g, e) for d, g, e in _attempts(workdir) if e["status"] == "wrong_answer"]
    assert failed
    d, gen, ev = failed[0]
    assert "case m=" in ev["reason"]


def test_no_attempt_after_a_passed_one(reference_run):
    workdir, _ = reference_run
    by_pg: dict[Path, list[str]] = {}
    for d, _, ev in _attempts(workdir):
        by_pg.setdefault(d.parent, []).append(ev["status"])
    for pg_dir, statuses in by_pg.items():
        assert "ok" not in statuses[:-1], f"{pg_dir}: attempts after a pass: {statuses}"


def test_final_round_lists_every_pgs_chain_end(reference_run):
    """The walk of each PG's repair chain (common.smk) hands the final round the attempt
    that ends it: the first that passed, or the last one made; selection reads them there."""
    workdir, _ = reference_run
    for i in (1, 2):
        it = workdir / "results" / "dgemm" / f"iter{i}"
        ends = read_json(it / "final_round.json", "final_round")["finals"]
        assert [e["pg"] for e in ends] == [1, 2, 3, 4]
        for end in ends:
            made = sorted(it.glob(f"pg{end['pg']}/attempt*/evaluation.json"))
            last = read_json(made[-1], "evaluation")
            assert end["attempts"] == len(made) and end["attempt"] == len(made) - 1
            assert end["evaluation"].endswith(
                f"iter{i}/pg{end['pg']}/attempt{end['attempt']}/evaluation.json"
            )
            assert end["status"] == last["status"]
        best = read_json(it / "best.json", "best")
        assert sorted(c["pg"] for c in best["candidates"]) == [1, 2, 3, 4]


def test_the_archive_keeps_every_valid_kernel_and_the_pm_reads_it(reference_run):
    """archive.json after every iteration holds every valid chain end so far (one elite
    per code hash), and iteration 2's PM prompt shows the elites and iteration 1's final
    round with its reason (the default campaign.search: archive)."""
    workdir, _ = reference_run
    res = workdir / "results" / "dgemm"
    seen: set[str] = set()
    for i in (0, 1, 2):
        archive = read_json(res / f"iter{i}" / "archive.json", "archive")
        best = read_json(res / f"iter{i}" / "best.json", "best")
        sel = best["selected"]
        assert (
            archive["incumbent"] == f"iter{sel['iteration']}/pg{sel['pg']}/attempt{sel['attempt']}"
        )
        hashes = {e["source_sha256"] for e in archive["elites"]}
        for c in best["candidates"]:
            if c["status"] == "ok":
                ev = read_json(workdir / c["evaluation"], "evaluation")
                seen.add(ev["source_sha256"])
        assert seen <= hashes  # nothing valid is forgotten, across iterations
        if i:
            assert archive["last_round"]["reason"] == best["reason"]
            assert best["decision"]["rounds_used"] >= 3  # evaluation.repeats of the tests
    plan = read_json(res / "iter2" / "plan.json", "plan")
    assert plan["search"] == "archive" and plan["archive"].endswith("iter1/archive.json")
    entries = [
        json.loads(p.read_text()) for p in (workdir / "results" / ".llm-cache").glob("*/*.json")
    ]
    cached = [e["request"]["messages"][-1]["content"] for e in entries if "request" in e]
    prompts = [c for c in cached if c.startswith("[hpcagents:pm]") and "\nIteration: 2\n" in c]
    assert prompts, "no PM prompt of iteration 2 in the response cache"
    assert "## The archive: the best kernels the team has found so far" in prompts[0]
    assert "## The last final round (iteration 1" in prompts[0]
    assert str(workdir) not in prompts[0]  # ids, never paths


def test_rerun_of_a_finished_campaign_does_nothing(reference_run):
    workdir, log = reference_run
    before = len(read_log(log))
    proc = run_snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert len(read_log(log)) == before


def test_kill_mid_iteration_then_resume_loses_nothing(reference_run, tmp_path):
    ref_dir, _ = reference_run
    log = tmp_path / "requests.jsonl"
    server = serve(host="127.0.0.1", port=0, log_path=log, latency=0.3)
    try:
        workdir = tmp_path / "campaign"
        write_campaign(workdir, campaign_config(server.url))
        proc = subprocess.Popen(
            snakemake_cmd(workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        iter1 = workdir / "results" / "dgemm" / "iter1"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if len(list(iter1.glob("pg*/attempt*/evaluation.json"))) >= 2:
                break
            assert proc.poll() is None, "campaign ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("iteration 1 never reached its evaluations")
        # A crash: the whole process group dies at once, jobs in flight included.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (iter1 / "best.json").exists(), "killed too late to be mid-iteration"
        finished = {
            read_json(p, "generation")["prompt_sha256"]
            for p in workdir.glob("results/dgemm/iter*/pg*/attempt*/generation.json")
            if read_json(p, "generation").get("prompt_sha256")
        }
        assert finished
        # The documented resume: unlock, then run again (rerun-incomplete is in the profile).
        assert run_snakemake(workdir, "--unlock").returncode == 0
        resumed = run_snakemake(workdir)
        assert resumed.returncode == 0, resumed.stderr[-4000:]
    finally:
        server.shutdown()
    counts = Counter(entry["prompt_sha256"] for entry in read_log(log))
    regenerated = [h for h in finished if counts[h] != 1]
    assert not regenerated, f"{len(regenerated)} finished attempts were asked again"
    # What does not depend on timing is identical to the uninterrupted run: iteration 1's
    # plan and every attempt's code (which kernel wins depends on the machine's speed at
    # the time, so selections are compared only for completeness).
    assert _iteration_sources(workdir, 1) == _iteration_sources(ref_dir, 1)
    assert len(selections(workdir, 2)) == 3  # every iteration selected


def _iteration_sources(workdir: Path, i: int) -> dict[tuple[str, str], str]:
    it = workdir / "results" / "dgemm" / f"iter{i}"
    out = {("plan", ""): str(read_json(it / "plan.json", "plan")["strategies"])}
    for gen in it.glob("pg*/attempt*/generation.json"):
        out[(gen.parts[-3], gen.parts[-2])] = read_json(gen, "generation")["source_sha256"]
    return out


def test_a_kernel_outside_the_checkout_runs_a_campaign(tmp_path):
    """A user's kernel lives in their own folder (config ``kernels_dir``, relative to the
    campaign's directory), not in this checkout: it is found, judged and selected."""
    own = tmp_path / "own"
    copy_kernel("mm", own)
    assert not (REPO_DIR / "kernels" / "mm").exists()
    server = serve(port=0, kernels_dir=own, log_path=tmp_path / "requests.jsonl", latency=0.0)
    try:
        raw = campaign_config(server.url, kernels=["mm"], kernels_dir="../own")
        raw["campaign"].update(iterations=1, pgs=2, max_repairs=1)
        workdir = tmp_path / "campaign"
        write_campaign(workdir, raw)
        proc = run_snakemake(workdir)
        assert proc.returncode == 0, proc.stderr[-4000:]
    finally:
        server.shutdown()
    base = read_json(workdir / "results/mm/iter0/pg0/attempt0/generation.json", "generation")
    assert (workdir / "results/mm/iter0/pg0/attempt0/mm.c").read_bytes() == (
        own / "mm" / "mm.c"
    ).read_bytes()
    assert base["kind"] == "baseline"
    summary = read_json(workdir / "results/mm/summary.json", "summary")
    assert summary["speedup"] > 1.0
    assert read_json(workdir / "results/mm/iter1/best.json", "best")["candidates"]


def test_unreachable_server_stops_at_once_naming_it(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    raw = campaign_config(f"http://127.0.0.1:{port}/v1")
    write_campaign(tmp_path, raw)
    start = time.monotonic()
    proc = run_snakemake(tmp_path, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "no LLM server answers" in out and "'scripted'" in out
    assert time.monotonic() - start < 60
    assert not (
        tmp_path / "results" / "dgemm" / "iter0" / "pg0" / "attempt0" / "evaluation.json"
    ).exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"campaign.pgs": "four"}, "campaign.pgs"),
        ({"kernels": ["nosuchkernel"]}, "unknown kernel 'nosuchkernel'"),
        ({"evaluation.blas": "essl"}, "evaluation.blas"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, override, expected):
    raw = campaign_config("http://127.0.0.1:9/v1", **override)
    write_campaign(tmp_path, raw)
    proc = run_snakemake(tmp_path, "--dry-run", timeout=120)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (tmp_path / "results" / "dgemm").exists()


def test_missing_config_key_is_named(tmp_path):
    raw = campaign_config("http://127.0.0.1:9/v1")
    del raw["campaign"]["max_repairs"]
    write_campaign(tmp_path, raw)
    proc = run_snakemake(tmp_path, "--dry-run", timeout=120)
    assert proc.returncode != 0
    assert "'max_repairs' is a required property" in proc.stdout + proc.stderr
