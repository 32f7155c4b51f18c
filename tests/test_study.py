"""The N-PG study and the suite: real campaigns answered by the scripted model (a stand-in
for an LLM) in its stochastic mode, started as its own process on a free port."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hpcagents.cluster.campaigns import RunnerError, ScriptedModelProcess, scripted_kernels
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.scripted import ScriptedModel, serve


def _pm_messages(iteration: int, n: int) -> list[dict[str, str]]:
    return [
        {
            "role": "user",
            "content": f"Kernel: dgemm\nIteration: {iteration}\nStrategies wanted: {n}\n",
        }
    ]


def _plan(model: ScriptedModel, iteration: int, n: int, seed: int | None) -> list[str]:
    text = model.answer(_pm_messages(iteration, n), seed).text
    plan = json.loads(text.split("```json")[1].split("```")[0])
    return [s["name"] for s in plan["strategies"]]


def test_stochastic_pm_draws_by_seed_nested_over_n_and_replayable():
    model = ScriptedModel(stochastic=True)
    plans = {seed: _plan(model, 1, 8, seed) for seed in range(6)}
    assert len({tuple(p) for p in plans.values()}) > 1, "the seed must change the draw"
    for seed, plan in plans.items():
        assert len(set(plan)) == 8  # N different strategies
        assert _plan(model, 1, 8, seed) == plan  # same request, same answer
        for n in (1, 2, 4):
            assert _plan(model, 1, n, seed) == plan[:n]  # nested draws pair the Ns
    # the default mode is untouched: the list in order
    assert _plan(ScriptedModel(), 1, 2, 3) == ["loop_reorder", "register_blocking"]


def test_stochastic_pm_puts_strategies_its_history_names_last():
    model = ScriptedModel(stochastic=True)
    first = _plan(model, 2, 4, 11)
    messages = _pm_messages(2, 4)
    messages[0]["content"] += (
        "\n## What has been tried so far\n"
        + "".join(f"- iteration 1, PG {j}: {name}: valid\n" for j, name in enumerate(first, 1))
        + "\n## Your task\nPlan 4 strategies.\n"
    )
    text = model.answer(messages, 11).text
    again = [s["name"] for s in json.loads(text.split("```json")[1].split("```")[0])["strategies"]]
    assert len(again) == 4 and not set(again) & set(first)


def test_scripted_model_process_on_a_free_port_with_its_identity_checked(tmp_path):
    with ScriptedModelProcess(tmp_path, latency=0.0, stochastic=True) as server:
        assert server.port > 0
        import urllib.request

        with urllib.request.urlopen(f"{server.url}/models", timeout=10) as resp:
            (model,) = json.load(resp)["data"]
        assert model["instance"] == server.instance and model["stochastic"] is True
    assert server.proc is not None and server.proc.poll() is not None  # stopped

    other = serve(host="127.0.0.1", port=0)
    try:
        impostor = ScriptedModelProcess(tmp_path)
        impostor.port = other.port
        with pytest.raises(RunnerError, match="is not the scripted model this command started"):
            impostor._check_identity()
    finally:
        other.shutdown()


def test_bad_pgs_list_is_named(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hpcagents", "study", "--pgs", "1,two", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "--pgs '1,two'" in proc.stderr


@pytest.mark.slow
def test_study_runs_one_campaign_per_n_resumes_and_ends_in_figure_and_table(tmp_path):
    cmd = [
        sys.executable, "-m", "hpcagents", "study", "--pgs", "1,2", "--repeats", "1",
        "--iterations", "1", "--bench-size", "128", "--dir", str(tmp_path / "study"),
    ]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(first.stdout)
    study_dir = tmp_path / "study"
    for n in (1, 2):
        summary = json.loads((study_dir / f"N{n}-r0/results/dgemm/summary.json").read_text())
        assert summary["pgs"] == n and summary["iterations"] == 1
        assert (study_dir / f"N{n}-r0/results/dgemm/report.html").is_file()
    study = json.loads((study_dir / "study.json").read_text())
    assert [row["n"] for row in study["per_n"]] == [1, 2]
    assert study["stand_in"] is True
    final = {row["n"]: row["final_gflops"]["mean"] for row in study["per_n"]}
    assert study["headline"]["ratio"] == round(final[2] / final[1], 4)
    assert "headline: best(N=2) / best(N=1)" in first.stdout
    assert "stand-in" in first.stdout and "stand-in" in (study_dir / "study.md").read_text()
    png = (study_dir / "study.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "data:image/png;base64," in (study_dir / "study.html").read_text()

    # resumable: a second run keeps the finished campaigns and runs no Snakemake
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished before, kept") == 2
    assert json.loads((study_dir / "study.json").read_text()) == study


def test_suite_kernels_are_the_folders_with_a_scripted_set():
    kernels = scripted_kernels()
    assert "dgemm" in kernels
    for k in kernels:
        assert (REPO_DIR / "kernels" / k / "scripted" / "script.yaml").is_file()


@pytest.mark.slow
def test_suite_prints_one_table_per_kernel(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcagents",
            "suite",
            "--kernel",
            "dgemm",
            "--iterations",
            "1",
            "--pgs",
            "2",
            "--bench-size",
            "128",
            "--dir",
            str(tmp_path / "suite"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(proc.stdout)
    summary = json.loads((tmp_path / "suite/results/dgemm/summary.json").read_text())
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("dgemm ")]
    cells = row.split()
    assert float(cells[1]) == round(summary["baseline"]["gflops"], 2)
    assert float(cells[2]) == round(summary["final"]["gflops"], 2)
    assert float(cells[4]) == round(summary["final"]["pct_of_reference"], 1)
    assert cells[5] == "MKL"  # the reference, named as it is
    # % of MKL at twice every size, from the final round's scale check of the crown
    scaled = summary["final"]["at_scale"]
    if scaled is None:
        assert cells[6] == "–"
    else:
        assert float(cells[6].rstrip("*")) == round(scaled["pct_of_reference"], 1)
        assert cells[6].endswith("*") != scaled["figure_holds"]
    assert cells[8] == "1"  # iterations
    assert cells[9] == f"{summary['totals']['repairs_succeeded']}/{summary['totals']['repairs']}"
    assert "stand-in" in proc.stdout
    assert Path(tmp_path / "suite/suite.md").read_text().count("dgemm") >= 1
