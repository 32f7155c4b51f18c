"""Node-sized timing: the bench case grown on the node that times until the reference's
throughput plateaus, within memory, time and budget bounds; frozen per kernel and node
type, so every evaluation and final round of a campaign (resumed or not) uses one size;
a fixed evaluation.bench_size stays possible and is reported as fixed. No assertion here
depends on how fast anything runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hpcagents.core.artifacts import read_json, validate
from hpcagents.judge import node_size
from hpcagents.judge.evaluate import evaluate_source
from hpcagents.judge.node_size import SearchSettings, plateau_start
from hpcagents.judge.timing import BuildConfig, EvalConfig
from hpcagents.spec.kernelspec import load_kernel

FLAGS = ("-O2", "-march=native", "-fopenmp")
# three steps at most, from a small case: the mechanics, quickly
TINY = SearchSettings(
    max_steps=3, budget_s=60.0, min_ref_s=0.01, ref_calls=(2, 5), min_call_s=0.0, cache_multiple=0.0
)


@pytest.fixture
def small_dgemm(tmp_path):
    from conftest import copy_kernel

    kdir = copy_kernel("smallmm", tmp_path / "kernels")
    spec = (kdir / "kernel.yaml").read_text()
    spec = spec.replace("bench: {m: 768, n: 768, k: 768", "bench: {m: 96, n: 96, k: 96")
    (kdir / "kernel.yaml").write_text(spec)
    return load_kernel("smallmm", tmp_path / "kernels")


def test_bench_size_modes_are_node_kernel_or_a_fixed_integer():
    assert node_size.mode_of(None) == "node" and node_size.mode_of("node") == "node"
    assert node_size.mode_of("kernel") == "kernel.yaml" and node_size.mode_of(512) == "fixed"
    for bad in (0, -3, "big", 1.5, True):
        with pytest.raises(ValueError, match="evaluation.bench_size"):
            node_size.mode_of(bad)


def test_growth_keeps_the_cases_shape_and_scalars_and_doubles_the_work():
    stencil = load_kernel("stencil3d")
    big = node_size.scaled_case(stencil, 2.0).values
    assert (big["nx"], big["ny"], big["nz"]) == (384, 320, 256)
    assert big["c0"] == stencil.bench.values["c0"]
    assert node_size.work_degree(load_kernel("dgemm")) == pytest.approx(3.0, abs=0.05)
    assert node_size.work_degree(load_kernel("nbody")) == pytest.approx(2.0, abs=0.05)
    assert node_size.work_degree(load_kernel("spmv_csr")) == pytest.approx(1.0, abs=0.1)


def _curve(*rates: float) -> list[dict]:
    return [{"ref_gflops": r} for r in rates]


def test_the_choice_is_the_knee_where_the_reference_stops_changing():
    # rising to a plateau (MKL filling a node's cores)
    assert plateau_start(_curve(300, 450, 560, 600, 610), 0.05) == 3
    # falling to a plateau (a memory-bound kernel leaving the caches)
    assert plateau_start(_curve(40, 30, 21, 20.5), 0.05) == 2
    # flat from the start: kernel.yaml's size already is on the plateau
    assert plateau_start(_curve(95, 93), 0.05) == 0
    # a point slowed by noise after the knee moves the choice later, never earlier
    assert plateau_start(_curve(300, 600, 480, 610, 612), 0.05) == 3


def test_a_plateau_counts_only_where_an_evaluation_can_time_what_the_search_saw():
    s = SearchSettings()  # 20 ms calls; memory-bound data beyond 2 x the last-level cache
    llc = 300 * 2**20
    dgemm_968 = {"ref_best_s": 0.0024, "flops": 1.8e9, "bytes": 22.5e6}
    assert "2.40 ms" in node_size.plateau_blocker(dgemm_968, s, llc)
    dgemm_2048 = {"ref_best_s": 0.023, "flops": 17.2e9, "bytes": 100e6}
    assert node_size.plateau_blocker(dgemm_2048, s, llc) == ""  # compute-bound: cache is fine
    stencil_in_l3 = {"ref_best_s": 0.015 * 4, "flops": 61e6, "bytes": 123e6}
    why = node_size.plateau_blocker(stencil_in_l3, s, llc)
    assert "memory-bound" in why and "last-level cache (300 MiB)" in why
    stencil_out = {"ref_best_s": 0.5, "flops": 490e6, "bytes": 983e6}
    assert node_size.plateau_blocker(stencil_out, s, llc) == ""
    assert node_size.plateau_blocker(stencil_in_l3, s, 0) == ""  # cache unknown: no rule


def test_a_search_with_tiny_calls_grows_past_them_and_never_chooses_one(tmp_path, small_dgemm):
    # 96^3 is far under 20 ms on any machine: no plateau may end the search there, and
    # the size chosen is never one whose call is that short while a longer one was timed
    cfg = EvalConfig(bench_size=None, threads=1, timeout_s=60)
    ident = node_size.node_identity(small_dgemm, "gcc", FLAGS, 1, cfg.blas)
    # any change is flat; a budget no loaded machine spends on three small steps
    settings = dataclasses.replace(TINY, min_call_s=10.0, plateau=0.9, budget_s=900.0)
    rec = node_size.search(small_dgemm, "gcc", FLAGS, cfg, ident, settings)
    assert rec["stop"].startswith("steps") and len(rec["curve"]) == 3, rec["stop"]
    assert all("under 10000 ms" in p["not_eligible"] for p in rec["curve"])
    assert rec["chosen_index"] == 2 and "no size met the plateau's conditions" in rec["why"]
    validate(rec, "bench_size")


def test_a_fixed_size_is_reported_as_fixed_and_nothing_is_searched(tmp_path, small_dgemm):
    for size, mode in ((64, "fixed"), ("kernel", "kernel.yaml")):
        cfg = EvalConfig(bench_size=size)
        choice = node_size.choose(small_dgemm, tmp_path / "r", "gcc", FLAGS, cfg, TINY)
        assert choice.record["mode"] == mode and "evaluation.bench_size" in choice.record["why"]
    assert (
        node_size.choose(
            small_dgemm, tmp_path / "r", "gcc", FLAGS, EvalConfig(bench_size=64), TINY
        ).case.values["m"]
        == 64
    )
    assert not (tmp_path / "r").exists()


def test_the_size_is_searched_once_per_node_type_frozen_and_reused(
    tmp_path, small_dgemm, monkeypatch
):
    cfg = EvalConfig(bench_size=None, threads=1, timeout_s=60)
    kdir = tmp_path / "results" / "smallmm"
    first = node_size.choose(small_dgemm, kdir, "gcc", FLAGS, cfg, TINY)
    files = list((kdir / "bench_size").glob("*.json"))
    assert len(files) == 1 and first.record["reused"] is False
    frozen = read_json(files[0], "bench_size")
    curve = frozen["curve"]
    assert 1 <= len(curve) <= 3 and curve[0]["case"]["m"] == 96
    assert all(p["ref_gflops"] > 0 and p["baseline_s"] is not None for p in curve)
    assert frozen["stop"].split(":")[0] in ("plateau", "memory", "time", "budget", "steps")
    assert frozen["case"] == curve[frozen["chosen_index"]]["case"]
    assert [p["case"]["m"] for p in curve] == sorted(p["case"]["m"] for p in curve)

    # every later evaluation of the campaign (a resume too) reads it: no second search
    def no_search(*a, **k):
        raise AssertionError("searched twice")

    monkeypatch.setattr(node_size, "search", no_search)
    again = node_size.choose(small_dgemm, kdir, "gcc", FLAGS, cfg, TINY)
    assert again.record["reused"] is True and again.case == first.case
    # another node type (here: another thread count) is its own choice
    other = node_size.frozen_path(
        kdir, node_size.node_identity(small_dgemm, "gcc", FLAGS, 2, cfg.blas)
    )
    assert other != files[0]


def test_a_memory_bound_stops_the_growth(tmp_path, small_dgemm):
    # 2 MiB of memory for the evaluation: a few sizes fit half of it; no plateau ends the
    # growth first (a threshold of 0), so only the memory bound can
    cfg = EvalConfig(bench_size=None, threads=1, memory_mb=2)
    settings = dataclasses.replace(TINY, plateau=0.0, max_steps=20)
    rec = node_size.search(
        small_dgemm,
        "gcc",
        FLAGS,
        cfg,
        node_size.node_identity(small_dgemm, "gcc", FLAGS, 1, cfg.blas),
        settings,
    )
    assert rec["stop"].startswith("memory"), rec["stop"]
    bound = rec["settings"]["memory_bound_mib"]
    assert all(p["arena_mib"] <= bound for p in rec["curve"][1:])  # kernel.yaml's is the floor
    validate(rec, "bench_size", what="search record")


def test_a_search_that_cannot_run_falls_back_to_kernel_yaml_and_says_why(
    tmp_path, small_dgemm, monkeypatch
):
    def broken(*a, **k):
        raise node_size.NodeSizeError("the reference does not build: boom")

    monkeypatch.setattr(node_size, "choose", broken)
    cfg, rec = node_size.sized_config(
        small_dgemm,
        tmp_path / "r" / "smallmm" / "iter0" / "x.json",
        "gcc",
        FLAGS,
        EvalConfig(),
        {},
    )
    assert cfg.bench_values is None and rec["mode"] == "kernel.yaml" and "boom" in rec["why"]


def test_the_evaluation_times_the_frozen_case(tmp_path, small_dgemm):
    cfg = dataclasses.replace(
        EvalConfig(repeats=1, warmup=0, timeout_s=60, threads=1),
        bench_values=(("m", 72), ("n", 40), ("k", 24), ("alpha", 1.0), ("beta", 0.0)),
    )
    assert node_size.bench_case(small_dgemm, cfg).values["n"] == 40
    src = small_dgemm.directory / small_dgemm.source
    rec = evaluate_source(small_dgemm, src, tmp_path / "w", BuildConfig(cflags=FLAGS), cfg)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["timing"]["case"] == {"m": 72, "n": 40, "k": 24, "alpha": 1.0, "beta": 0.0}


def test_the_frozen_file_lives_under_the_kernels_results():
    out = Path("/x/results/dgemm/iter3/pg2/attempt1/evaluation.json")
    assert node_size.kernel_results_dir(out) == Path("/x/results/dgemm")
    assert node_size.kernel_results_dir(Path("/x/results/dgemm/iter0/final_round.json")) == Path(
        "/x/results/dgemm"
    )


def test_iteration_0_chooses_the_size_and_every_later_evaluation_reads_it(
    tmp_path, small_dgemm, monkeypatch
):
    """Through the campaign's own steps: the baseline's evaluation (iteration 0) searches
    and records how; a later attempt of the kernel times the same frozen case."""
    from conftest import campaign_config
    from hpcagents.campaign import steps
    from hpcagents.spec.config import parse_config

    raw = campaign_config("http://127.0.0.1:9/v1", **{"evaluation.bench_size": None})
    raw["kernels"] = ["smallmm"]
    raw["kernels_dir"] = str(tmp_path / "kernels")
    raw["build"]["cflags"] = list(FLAGS)
    # a plateau of 100%: the growth stops at the second size (the mechanics, quickly)
    raw["evaluation"].update(threads=1, repeats=1, bench_search_s=30, bench_plateau=1.0)
    raw["evaluation"]["timeout_s"] = 120
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(raw)
    a0 = tmp_path / "results" / "smallmm" / "iter0" / "pg0" / "attempt0"
    base = cfg.kernel("smallmm")
    steps.baseline(cfg, "smallmm", base.directory / base.source, a0 / "smallmm.c", a0 / "gen.json")
    first = steps.evaluate_attempt(
        cfg, "smallmm", a0 / "smallmm.c", a0 / "gen.json", a0 / "evaluation.json"
    )
    assert first["status"] == "ok", first["reason"]
    sized = first["bench_size"]
    assert sized["mode"] == "node" and sized["reused"] is False and sized["curve"]
    assert first["timing"]["case"] == sized["case"]
    assert Path(sized["frozen"]).parent == tmp_path / "results" / "smallmm" / "bench_size"
    read_json(a0 / "evaluation.json", "evaluation")  # schema-valid with the new fields

    monkeypatch.setattr(node_size, "search", lambda *a, **k: pytest.fail("searched again"))
    a1 = tmp_path / "results" / "smallmm" / "iter1" / "pg1" / "attempt0"
    # the same source, as a later attempt
    steps.baseline(cfg, "smallmm", base.directory / base.source, a1 / "smallmm.c", a1 / "gen.json")
    later = steps.evaluate_attempt(
        cfg, "smallmm", a1 / "smallmm.c", a1 / "gen.json", a1 / "evaluation.json"
    )
    assert later["bench_size"]["reused"] is True
    assert later["timing"]["case"] == first["timing"]["case"]


def test_a_shared_bench_size_dir_gives_several_campaigns_one_choice(tmp_path, small_dgemm):
    shared = {"bench_size_dir": str(tmp_path / "study" / "bench_size"), "bench_search_s": 20}
    cfg = EvalConfig(bench_size=None, threads=1, timeout_s=60)
    runs = [tmp_path / f"N{n}" / "results" / "smallmm" / "iter0" / "e.json" for n in (1, 2)]
    one, rec1 = node_size.sized_config(small_dgemm, runs[0], "gcc", FLAGS, cfg, shared)
    two, rec2 = node_size.sized_config(small_dgemm, runs[1], "gcc", FLAGS, cfg, shared)
    assert rec1["reused"] is False and rec2["reused"] is True
    assert one.bench_values == two.bench_values
    assert rec1["frozen"].startswith(str(tmp_path / "study" / "bench_size" / "smallmm"))


def test_a_size_whose_timed_calls_would_not_fit_the_timeout_is_never_chosen(small_dgemm):
    # a share of the timeout no call fits: the first size is measured, found over the
    # bound, and the search stops there; it is recorded, never grown past
    cfg = EvalConfig(bench_size=None, threads=1, timeout_s=60)
    ident = node_size.node_identity(small_dgemm, "gcc", FLAGS, 1, cfg.blas)
    settings = dataclasses.replace(TINY, plateau=0.0, timeout_share=1e-9)
    rec = node_size.search(small_dgemm, "gcc", FLAGS, cfg, ident, settings)
    assert rec["stop"].startswith("time") and len(rec["curve"]) == 1
    assert rec["curve"][0]["over_time_bound"] and node_size.call_cost(rec["curve"][0]) > 0
