"""One layout, one reader, one repair policy, and a run's config and kernel specs frozen
once at its start (issue 21)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import campaign_config, copy_kernel, write_campaign
from hpcagents.campaign.reader import read_chain, read_kernel
from hpcagents.campaign.repair import chain_end, ends_chain
from hpcagents.core import artifacts
from hpcagents.core.layout import AttemptKey, CampaignLayout
from hpcagents.spec import kernelspec
from hpcagents.spec.config import parse_config
from hpcagents.spec.effective import load_step_config, write_effective_config
from hpcagents.spec.kernelspec import KernelError

URL = "http://127.0.0.1:9/v1"


def test_layout_builds_the_documented_tree_and_snakemake_patterns():
    k = CampaignLayout(Path("results")).kernel("dgemm")
    assert k.source(2, 3, 1) == Path("results/dgemm/iter2/pg3/attempt1/dgemm.c")
    assert k.evaluation(0, 0, 0) == Path("results/dgemm/iter0/pg0/attempt0/evaluation.json")
    assert k.best_source(4) == Path("results/dgemm/iter4/best/dgemm.c")
    pattern = CampaignLayout().kernel("{kernel}").generation("{i}", "{j}", "{a}")
    assert str(pattern) == "results/{kernel}/iter{i}/pg{j}/attempt{a}/generation.json"
    assert CampaignLayout().made_by() == Path("results/.hpcagents/made-by.json")


def test_an_attempt_path_parses_back_to_its_key():
    path = "/x/results/mm/iter12/pg3/attempt2/evaluation.json"
    assert CampaignLayout.attempt_of(path) == AttemptKey("mm", 12, 3, 2)
    assert CampaignLayout.attempt_of("/x/results/mm/iter1/plan.json") is None


def test_reader_orders_iterations_pgs_and_attempts_by_number(tmp_path):
    k = CampaignLayout(tmp_path).kernel("k")
    for i, j, a in [(0, 0, 0), (1, 10, 0), (1, 2, 0), (1, 2, 1), (10, 1, 0), (2, 1, 0)]:
        k.attempt_dir(i, j, a).mkdir(parents=True)
    k.evaluation(1, 2, 1).write_text(json.dumps({"status": "ok"}))
    run = read_kernel(k)
    assert [it.iteration for it in run.iterations] == [0, 1, 2, 10]
    it1 = run.iteration(1)
    assert [p.pg for p in it1.pgs] == [2, 10]
    last = it1.pg(2).last
    assert (last.attempt, last.status, last.generation) == (1, "ok", None)


def test_repair_policy_ends_a_chain_on_a_pass_on_the_last_allowed_attempt_or_the_baseline():
    assert ends_chain(1, 0, "ok", 2)
    assert not ends_chain(1, 1, "wrong_answer", 2)
    assert ends_chain(1, 2, "wrong_answer", 2)
    assert ends_chain(0, 0, "compile_error", 2)  # the baseline is never repaired
    assert not ends_chain(1, 0, None, 2)  # not evaluated yet
    assert not ends_chain(1, 5, "timeout", None)  # unknown bound: a repair may be due
    assert chain_end(["compile_error", "ok", None], 1, 2) == 1
    assert chain_end(["compile_error", None], 1, 2) is None


def test_selection_reads_a_chain_up_to_the_attempt_that_ends_it(tmp_path, monkeypatch):
    from hpcagents.campaign import reader

    k = CampaignLayout(tmp_path / "results").kernel("k")
    for a, status in enumerate(["compile_error", "ok", "wrong_answer"]):
        k.attempt_dir(1, 4, a).mkdir(parents=True)
        k.generation(1, 4, a).write_text(json.dumps({"attempt": a}))
        k.evaluation(1, 4, a).write_text(json.dumps({"status": status}))
    read = []
    monkeypatch.setattr(
        reader,
        "read_json",
        lambda path, schema: read.append(schema) or json.loads(Path(path).read_text()),
    )
    chain = read_chain(k.evaluation(1, 4, 1))
    assert [(a.pg, a.attempt, a.status) for a in chain] == [(4, 0, "compile_error"), (4, 1, "ok")]
    assert set(read) == {"generation", "evaluation"}  # strict: every record validated
    with pytest.raises(ValueError, match="not an attempt"):
        read_chain(k.best(1))


# ---- validate once, freeze once ----------------------------------------------------------


def _mine(tmp_path: Path) -> tuple[dict, Path]:
    kdir = tmp_path / "kernels"
    copy_kernel("mm", kdir)
    raw = campaign_config(URL, kernels=["mm"], kernels_dir=str(kdir))
    return raw, kdir / "mm"


def test_a_job_reads_the_specs_frozen_at_the_start_not_the_folder_now(tmp_path, monkeypatch):
    raw, folder = _mine(tmp_path)
    effective = write_effective_config(parse_config(raw), CampaignLayout(tmp_path / "results"))
    spec = folder / "kernel.yaml"
    title = kernelspec.load_kernel("mm", folder.parent).title
    before = yaml.safe_load(spec.read_text())
    spec.write_text(spec.read_text().replace("title:", "title: edited", 1))

    def no_schema_pass(*args, **kwargs):
        raise AssertionError("a job validated a schema again")

    monkeypatch.setattr(artifacts, "validate", no_schema_pass)
    monkeypatch.setattr(kernelspec, "validate", no_schema_pass)
    cfg = load_step_config(effective)
    frozen = cfg.kernel("mm")
    assert frozen.title == title  # the frozen spec, not the edited one
    # as written, key order included: a case's name is shown to the agents ("m=1 n=1 k=1")
    assert json.dumps(frozen.raw) == json.dumps(kernelspec._build(before, spec, "mm").raw)
    assert frozen.cases[0].label().startswith("m=")
    assert cfg.kernels == ("mm",) and cfg.kernels_dir == folder.parent


def test_a_job_refuses_a_reference_file_changed_since_the_start(tmp_path):
    raw, folder = _mine(tmp_path)
    effective = write_effective_config(parse_config(raw), CampaignLayout(tmp_path / "results"))
    ref = folder / kernelspec.load_kernel("mm", folder.parent).reference.file
    ref.write_text(ref.read_text() + "\n/* edited */\n")
    with pytest.raises(KernelError, match=r"changed since this run started.*accept-changes"):
        load_step_config(effective).kernel("mm")


def _run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpcagents", "run", "--configfile", "config.yaml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_kernel_yaml_edited_between_two_starts_is_named_with_what_to_do(start_scripted, tmp_path):
    server = start_scripted()
    raw, folder = _mine(tmp_path)
    raw["llm"]["servers"][0]["base_url"] = server.url
    write_campaign(tmp_path, raw)
    # the first start: only the baseline's copy (no model, no timing) to keep it short
    # (a flag first: Snakemake's --configfile, which run passes, takes every word after it)
    target = ["--rerun-incomplete", str(CampaignLayout().kernel("mm").generation(0, 0, 0))]
    first = _run(tmp_path, "--", *target)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert CampaignLayout(tmp_path / "results").made_by().is_file()

    spec = folder / "kernel.yaml"
    spec.write_text(spec.read_text().replace("title:", "title: edited", 1))
    second = _run(tmp_path, "--", *target)
    print(second.stderr)  # the message a user sees (shown with pytest -s)
    assert second.returncode == 2
    assert "kernel mm: kernel.yaml title:" in second.stderr
    assert "--accept-changes" in second.stderr and "--dir" in second.stderr
    assert "Nothing was run" in second.stderr

    third = _run(tmp_path, "--accept-changes", "--", *target)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    newest = CampaignLayout(tmp_path / "results").effective_configs()[-1]
    assert load_step_config(newest).kernel("mm").title.startswith("edited")
