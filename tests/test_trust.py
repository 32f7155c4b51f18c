"""Figures a user can trust (issue 22): commands where the user stands, a results folder
that knows what made it, the doubt on every figure, the reference named as it is, a kill
that leaves nothing running, and the messages of a bad config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import campaign_config, copy_kernel
from hpcagents.core import lifeline
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.demo import demo_config_path
from hpcagents.judge import hostload
from hpcagents.spec import frozen
from hpcagents.spec.config import ConfigError, parse_config
from hpcagents.spec.newkernel import function_body, neighbour_reads
from hpcagents.views.summary import table

URL = "http://127.0.0.1:9/v1"


# ---- 1. where the user stands ------------------------------------------------------------


def test_demo_config_is_read_relative_to_where_the_user_stands(tmp_path):
    assert demo_config_path("my.yaml", tmp_path) == tmp_path / "my.yaml"
    assert demo_config_path("/abs/c.yaml", tmp_path) == Path("/abs/c.yaml")
    assert demo_config_path(None, tmp_path) == REPO_DIR / "config" / "config.yaml"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("x: 1\n")
    assert demo_config_path(None, tmp_path) == tmp_path / "config" / "config.yaml"


# ---- 2. a results folder knows what made it ----------------------------------------------


def _results_with_figures(tmp_path: Path, raw: dict) -> Path:
    results = tmp_path / "results"
    frozen.record(parse_config(raw), results)
    ev = results / "dgemm" / "iter0" / "pg0" / "attempt0"
    ev.mkdir(parents=True)
    (ev / "evaluation.json").write_text("{}")
    (ev / "generation.json").write_text("{}")
    (results / "dgemm" / "iter0" / "best.json").write_text("{}")
    return results


def test_changed_bench_size_is_refused_naming_the_key_old_and_new(tmp_path):
    results = _results_with_figures(tmp_path, campaign_config(URL))
    changed = parse_config(campaign_config(URL, **{"evaluation.bench_size": 512}))
    with pytest.raises(ConfigError) as err:
        frozen.guard(changed, results, accept=False)
    message = str(err.value)
    assert "evaluation.bench_size: 256 -> 512" in message
    assert "--accept-changes" in message and "--dir" in message
    # nothing was touched
    assert (results / "dgemm" / "iter0" / "best.json").is_file()


def test_accepted_change_is_recorded_and_the_stale_figures_moved_aside(tmp_path):
    results = _results_with_figures(tmp_path, campaign_config(URL))
    changed = parse_config(campaign_config(URL, **{"evaluation.repeats": 9}))
    notes = frozen.guard(changed, results, accept=True)
    assert any("evaluation.repeats: 3 -> 9" in n for n in notes)
    attempt = results / "dgemm" / "iter0" / "pg0" / "attempt0"
    assert not (attempt / "evaluation.json").exists()  # made again by the run
    assert (attempt / "generation.json").is_file()  # the LLM's answer is kept
    rec = frozen.made_by(results)
    (entry,) = rec["history"]
    assert entry["changes"][0]["key"] == "evaluation.repeats" and entry["changes"][0]["new"] == 9
    moved = results / entry["superseded"] / "dgemm" / "iter0" / "best.json"
    assert moved.is_file()
    assert frozen.guard(changed, results, accept=False) == []  # now the record's settings


def test_server_and_concurrency_changes_are_allowed_and_recorded(tmp_path):
    results = _results_with_figures(tmp_path, campaign_config(URL))
    other = campaign_config("http://127.0.0.1:10/v1", **{"campaign.pgs": 8})
    other["llm"]["servers"][0]["model"] = "openai/gpt-oss-120b"
    cfg = parse_config(other)
    assert frozen.guard(cfg, results, accept=False) == []
    notes = frozen.record(cfg, results)
    assert any("campaign.pgs: 4 -> 8" in n for n in notes)
    assert any("llm.servers" in n and "gpt-oss" in n for n in notes)
    assert frozen.made_by(results)["history"][0]["allowed"] is True


def test_a_changed_kernel_spec_names_the_kernel_and_its_key(tmp_path):
    kdir = tmp_path / "mine"
    copy_kernel("mm", kdir)
    raw = campaign_config(URL, kernels=["mm"], kernels_dir=str(kdir))
    results = tmp_path / "results"
    frozen.record(parse_config(raw), results)
    spec = kdir / "mm" / "kernel.yaml"
    spec.write_text(spec.read_text().replace("title:", "title: changed", 1))
    with pytest.raises(ConfigError, match=r"kernel mm: kernel.yaml title: .* -> "):
        frozen.guard(parse_config(raw), results, accept=False)


# ---- 3. every figure carries its doubt ----------------------------------------------------


def test_busy_host_is_said_in_words_with_how_far_off():
    rec = {"runnable_per_core": 3.1, "steal_pct": 0.0, "spread": 1.04}
    judged = hostload.judge_load(rec)
    assert judged["busy"] and not judged["noisy"]
    assert judged["doubt"].startswith("host busy: 3.1 runnable tasks per core")
    assert "figures may be off by up to 310%" in judged["doubt"]


def test_quiet_host_with_tight_repeats_has_no_doubt():
    judged = hostload.judge_load({"runnable_per_core": 0.0, "steal_pct": 0.0, "spread": 1.02})
    assert judged == {"busy": False, "noisy": False, "doubt": ""}


def test_wide_spread_and_steal_are_flagged():
    judged = hostload.judge_load({"runnable_per_core": 0.0, "steal_pct": 12.0, "spread": 1.5})
    assert judged["busy"] and judged["noisy"]
    assert "12% CPU steal" in judged["doubt"] and "spread x1.50" in judged["doubt"]


def test_implausible_percent_of_a_vendor_blas_is_warned_not_of_a_users_file():
    assert "implausible" in hostload.implausible(1464.8, "mkl")
    assert "of OpenBLAS" in hostload.implausible(200.0, "openblas")
    assert hostload.implausible(140.0, "mkl") == ""
    assert hostload.implausible(900.0, "reference.c") == ""


def test_load_watch_does_not_count_our_own_runnable_threads():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert hostload.own_running(os.getpid()) >= 2  # this thread and the hog
        watch = hostload.LoadWatch()
        for _ in range(3):
            watch.sample()
        rec = watch.record(1.01)
    finally:
        hog.kill()
        hog.wait()
    assert set(rec) >= {"runnable_others", "steal_pct", "loadavg_1m_start", "busy", "doubt"}
    assert len(rec["runnable_others"]) == 3
    assert rec["cores"] >= 1


# ---- 4. the reference named as it is -------------------------------------------------------


def test_reference_is_named_as_it_is():
    assert hostload.reference_name("mkl") == "MKL"
    assert hostload.reference_name("openblas") == "OpenBLAS"
    assert hostload.reference_name("reference.c") == "reference.c"


def _summary(reference: str, warnings: list[str], gbps: float | None = None) -> dict:
    row = {
        "iteration": 0,
        "gflops": 2.0,
        "gbps": gbps,
        "pct_of_reference": 50.0,
        "changed": True,
        "winner_pg": 0,
        "winner_strategy": "baseline",
        "candidates": 1,
        "valid": 1,
        "attempts": 1,
        "repairs": 0,
        "repairs_succeeded": 0,
        "tokens": 0,
        "llm_calls": 0,
        "plan_origin": "baseline",
        "doubt": warnings,
    }
    point = {"gflops": 2.0, "pct_of_reference": 50.0, "gbps": gbps}
    return {
        "kernel": "k",
        "rows": [row],
        "baseline": point,
        "final": point,
        "speedup": 1.0,
        "warnings": [f"iteration 0: {w}" for w in warnings],
        "llm_servers": [],
        "build": {"blas": "mkl", "reference": reference},
    }


def test_summary_table_names_the_users_file_and_says_the_doubt():
    text = table(_summary("reference.c", ["timing: host busy: 8.0 runnable tasks per core"]))
    assert "50.0% of reference.c" in text and "of mkl" not in text
    assert "WARNING: iteration 0: timing: host busy: 8.0 runnable tasks per core" in text
    assert "   0! " in text


def test_summary_table_shows_gb_per_s_for_a_memory_bound_kernel():
    text = table(_summary("MKL", [], gbps=12.5))
    assert "12.50 GB/s: memory-bound" in text and "WARNING:" not in text


def test_report_names_the_reference_and_shows_the_doubt():
    from hpcagents.views.report import _blas, _iteration_table

    s = _summary("reference.c", ["final round: spread x1.50 between repeats"], gbps=3.0)
    assert _blas(s) == "reference.c"
    assert _blas({"build": {"blas": "openblas"}}) == "OpenBLAS"
    html = _iteration_table(s)
    assert "% of reference.c" in html and "spread x1.50" in html and "GB/s" in html


# ---- 5. a kill leaves nothing running -------------------------------------------------------

_CHILD = """
import os, subprocess, sys, time
from hpcagents.core.lifeline import tie_to_campaign
assert tie_to_campaign() == os.getppid()
grand = subprocess.Popen(["sleep", "300"], start_new_session=True)
open(sys.argv[1], "w").write(f"{os.getpid()} {grand.pid}")
time.sleep(300)
"""
# a stand-in for Snakemake: its command line names snakemake, it starts the step and waits
_PARENT = """
import subprocess, sys  # snakemake
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]]).wait()
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_step_and_what_it_started_die_when_snakemake_is_killed(tmp_path):
    pids_file = tmp_path / "pids"
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR / "workflow")}
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _CHILD, str(pids_file)], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not pids_file.is_file() or not pids_file.read_text():
        assert parent.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    step, grandchild = map(int, pids_file.read_text().split())
    assert _alive(step) and _alive(grandchild)
    parent.kill()  # kill -9 of "Snakemake" alone
    parent.wait()
    while (_alive(step) or _alive(grandchild)) and time.monotonic() < deadline + 30:
        time.sleep(0.05)
    assert not _alive(step), "the step outlived its Snakemake"
    assert not _alive(grandchild), "what the step started outlived its Snakemake"


def test_next_start_ends_and_names_what_survived_under_results(tmp_path):
    from hpcagents.cluster.run import end_orphans

    sandbox_dir = tmp_path / "results" / "k" / "iter1" / "pg1" / "attempt0" / ".build-x"
    sandbox_dir.mkdir(parents=True)
    survivor = subprocess.Popen(["sleep", "300"], cwd=sandbox_dir, start_new_session=True)
    try:
        found = lifeline.campaign_processes(tmp_path)
        assert [p.pid for p in found if p.step == "sandbox"] == [survivor.pid]
        notes = end_orphans(tmp_path, slurm=False)
        survivor.wait(timeout=30)
    finally:
        if survivor.poll() is None:
            survivor.kill()
    assert any(f"pid {survivor.pid}" in n and "sleep 300" in n for n in notes), notes


def test_status_says_running_only_for_a_live_process_and_cut_otherwise(tmp_path):
    from hpcagents.campaign.reader import read_pg
    from hpcagents.core.layout import KernelLayout
    from hpcagents.views.status import _pg_state

    adir = tmp_path / "results" / "k" / "iter1" / "pg1" / "attempt0"
    adir.mkdir(parents=True)
    (adir / "generation.json").write_text(json.dumps({"status": "ok"}))
    key = "results/k/iter1/pg1/attempt0/evaluation.json"
    inflight = {key: None}
    pg = read_pg(KernelLayout(tmp_path / "results" / "k"), 1, 1)
    cut = _pg_state(1, pg, 1, "s", tmp_path, inflight, False, 2, {})
    assert cut.state == "cut" and "no process runs" in cut.detail
    live = _pg_state(1, pg, 1, "s", tmp_path, inflight, False, 2, {key: 4242})
    assert live.state == "evaluating" and "orphaned (pid 4242)" in live.detail


# ---- 6. the messages of a bad config -------------------------------------------------------


def test_duplicate_server_name_is_named():
    s = {"name": "gpu-a", "base_url": URL, "model": "m"}
    with pytest.raises(ConfigError, match=r"server name 'gpu-a' is used 2 times"):
        parse_config(campaign_config(URL, **{"llm.servers": [s, dict(s)]}))


@pytest.mark.parametrize(
    "url, fix",
    [
        ("http://gpu1:8000", "'http://gpu1:8000/v1'"),
        ("http://gpu1:11434/", "'http://gpu1:11434/v1'"),
        ("http://gpu1:8000/v1/chat/completions", "'http://gpu1:8000/v1'"),
    ],
)
def test_base_url_without_the_openai_path_is_refused_with_the_fix(url, fix):
    s = {"name": "vllm", "base_url": url, "model": "m"}
    with pytest.raises(ConfigError, match=r"llm server 'vllm': base_url") as err:
        parse_config(campaign_config(URL, **{"llm.servers": [s]}))
    assert fix in str(err.value)


def test_scripted_model_for_a_kernel_it_cannot_serve_is_refused_with_what_to_do(tmp_path):
    copy_kernel("mine", tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "mine" / "scripted")
    raw = campaign_config(URL, kernels=["mine"], kernels_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"kernel\(s\) mine: the scripted model") as err:
        parse_config(raw)
    assert "real model" in str(err.value) and "hpcagents evaluate --kernel mine" in str(err.value)


def test_yaml_error_under_run_names_file_and_line(tmp_path):
    good = yaml.safe_dump(campaign_config(URL), sort_keys=False)
    assert good.startswith("kernels:\n- dgemm\n")
    bad = "kernels: [dgemm\n" + good[len("kernels:\n- dgemm\n") :]  # unclosed [
    (tmp_path / "bad.yaml").write_text(bad)
    for cmd in (["run", "--configfile", "bad.yaml"], ["demo", "--config", "bad.yaml"]):
        proc = subprocess.run(
            [sys.executable, "-m", "hpcagents", *cmd],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "bad.yaml:" in proc.stderr and "invalid YAML" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "results" / "dgemm").exists()


def test_kernel_yaml_error_names_file_and_line(tmp_path):
    from hpcagents.spec.kernelspec import KernelError, load_kernel

    copy_kernel("mm", tmp_path)
    spec = tmp_path / "mm" / "kernel.yaml"
    spec.write_text(spec.read_text() + "bad: [unclosed\n")
    with pytest.raises(KernelError, match=r"mm/kernel.yaml:\d+:\d+: not valid YAML"):
        load_kernel("mm", tmp_path)


def test_new_kernel_finds_a_stencils_neighbour_reads_and_not_a_matvecs():
    stencil = """void s(int nx, const double *u, double *v) {
        for (int i = 1; i <= nx; i++) v[i] = u[i - 1] - 2 * u[i] + u[i + 1];
    }"""
    matvec = """void mv(int n, const double *a, const double *x, double *y) {
        for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) y[i] += a[i*n + j] * x[j];
    }"""
    assert neighbour_reads(function_body(stencil, "s")) == ["u[i - 1]", "u[i + 1]"]
    assert neighbour_reads(function_body(matvec, "mv")) == []


def test_new_kernel_yaml_speaks_of_halos_validation_sizes_and_bytes(tmp_path):
    from hpcagents.spec.newkernel import new_kernel

    src = tmp_path / "heat.c"
    src.write_text(
        "void heat(int n, const double *u, double *v) {\n"
        "  for (int i = 1; i <= n; i++) v[i] = u[i - 1] + u[i + 1] - 2.0 * u[i];\n}\n"
    )
    text = (new_kernel("heat", src, "heat", tmp_path / "k") / "kernel.yaml").read_text()
    assert "STENCIL" in text and "halo" in text
    assert "validation runs EXACTLY these sizes" in text
    assert "GB/s" in text


def test_gb_per_s_only_for_a_kernel_below_the_ridge_even_if_the_model_was_starved():
    from hpcagents.judge.figures import gbps_from_record

    # a dgemm (16 flop/byte) under a roofline measured on a busy host: not memory-bound
    starved = {"arithmetic_intensity": 16.0, "ridge_intensity": 40.0, "bound": "memory"}
    assert gbps_from_record(80.0, starved) is None
    dgemv = {"arithmetic_intensity": 0.25, "ridge_intensity": 10.0, "bound": "memory"}
    assert gbps_from_record(2.0, dgemv) == 8.0


def test_a_snakemake_left_running_without_its_run_blocks_a_new_start(tmp_path):
    from hpcagents.cluster.run import running_campaign

    assert running_campaign(tmp_path) is None
    smk = subprocess.Popen(
        [sys.executable, "-c", "import time  # snakemake\ntime.sleep(120)"], cwd=tmp_path
    )
    try:
        live = running_campaign(tmp_path)
    finally:
        smk.kill()
        smk.wait()
    assert live is not None and live["pid"] == smk.pid
