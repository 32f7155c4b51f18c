"""The machine the prompts describe is the node that times, as this job can use it:
caches read from the job's own CPUs with the job's share of each, the host's figure said
to be the host's in a VM; NUMA and SMT layout; a peak that is checked against the spec
and against the reference, never left below what a library reached."""

from __future__ import annotations

from pathlib import Path

import pytest
from hpcagents.core.artifacts import read_json
from hpcagents.judge import machine
from hpcagents.judge.machine import BenchSettings, MachineModel, cache_label, machine_model
from hpcagents.llm.agents import BuildInfo, machine_text

QUICK = BenchSettings(
    peak_run_s=0.002, peak_runs=3, stream_runs=2, stream_min_mib=4, stream_max_mib=4
)
FLAGS = ("-O2", "-march=native", "-fopenmp")


def fake_sysfs(root: Path, cpus: int, l3_groups: list[range], numa: list[range]) -> Path:
    """A /sys/devices/system/{cpu,node} tree: per-core L1d/L2, L3 shared per group."""
    cpu_dir = root / "cpu"
    for c in range(cpus):
        cache = cpu_dir / f"cpu{c}" / "cache"
        group = next(g for g in l3_groups if c in g)
        for i, (level, kind, size, shared) in enumerate(
            [
                (1, "Data", "48K", str(c)),
                (2, "Unified", "2048K", str(c)),
                (3, "Unified", "98304K", f"{group[0]}-{group[-1]}"),
            ]
        ):
            d = cache / f"index{i}"
            d.mkdir(parents=True)
            (d / "level").write_text(f"{level}\n")
            (d / "type").write_text(f"{kind}\n")
            (d / "size").write_text(f"{size}\n")
            (d / "shared_cpu_list").write_text(f"{shared}\n")
        top = cpu_dir / f"cpu{c}" / "topology"
        top.mkdir(parents=True)
        (top / "physical_package_id").write_text(f"{l3_groups.index(group)}\n")
        (top / "core_id").write_text(f"{c}\n")
    for n, r in enumerate(numa):
        d = root / "node" / f"node{n}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(f"{r[0]}-{r[-1]}\n")
        (d / "meminfo").write_text(f"Node {n} MemTotal:       67108864 kB\n")
    return root


def test_caches_are_read_from_the_jobs_own_cpus_with_its_share_of_a_shared_l3(tmp_path):
    root = fake_sysfs(tmp_path, 32, [range(0, 16), range(16, 32)], [range(0, 16), range(16, 32)])
    job = {20, 21, 22, 23}  # a cpuset of 4 CPUs of the second socket: cpu0 is not the job's
    levels = machine.caches(root / "cpu", cpus=job, vm=False)
    l3 = next(c for c in levels if c["level"] == 3)
    assert l3["shared_by"] == 16 and l3["job_cpus"] == 4 and l3["share_kib"] == 98304 // 4
    label = cache_label(l3)
    assert "shared by 16 CPUs" in label and "4 of them this job's" in label and "24 MiB" in label
    l2 = next(c for c in levels if c["level"] == 2)
    assert l2["shared_by"] == 1 and l2["instances"] == 4 and not l2["host_figure"]
    assert "per core, 4 instances" in cache_label(l2)


def test_a_vm_reports_its_shared_cache_as_the_hosts_figure(tmp_path):
    root = fake_sysfs(tmp_path, 2, [range(0, 2)], [range(0, 2)])
    levels = machine.caches(root / "cpu", cpus={0, 1}, vm=True)
    l3 = next(c for c in levels if c["level"] == 3)
    assert l3["host_figure"] and l3["job_cpus"] == 2
    label = cache_label(l3)
    assert "the host's figure" in label and "cannot count on all of it" in label
    assert not next(c for c in levels if c["level"] == 1)["host_figure"]


def test_topology_names_the_numa_nodes_and_cores_the_job_has(tmp_path):
    root = fake_sysfs(tmp_path, 32, [range(0, 16), range(16, 32)], [range(0, 16), range(16, 32)])
    t = machine.topology(root / "cpu", root / "node", cpus={14, 15, 16, 17})
    assert t["job_cpus"] == 4 and t["physical_cores"] == 4 and t["sockets"] == 2
    assert t["numa_nodes_used"] == 2
    assert [n["job_cpus"] for n in t["numa"]] == [2, 2]
    text = machine.topology_label(t)
    assert "2 NUMA node(s)" in text and "node 1: 2 of its 16 CPUs, 64 GiB" in text
    assert "first-touch" in text


def test_the_measured_model_carries_topology_and_a_spec_cross_check(tmp_path):
    model = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    assert model.topology["job_cpus"] >= 1 and model.topology["numa"]
    spec = model.peak["spec"]
    assert spec["fma_units"] >= 1 and spec["datapath_bits"] in (128, 256, 512)
    if spec["gflops"]:
        assert spec["ratio"] == pytest.approx(model.peak_gflops / spec["gflops"], rel=1e-2)
    if model.compiler_isa and "avx512f" in model.compiler_isa:
        # both widths tried, the better one kept
        assert set(model.peak["variants_gflops"]) == {"512", "256"}
        best = max(model.peak["variants_gflops"].values())
        assert model.peak_gflops == pytest.approx(best, abs=1e-3)
    assert "peak check:" in machine.describe(model)


def test_the_prompt_describes_topology_and_usable_caches(tmp_path):
    model = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    text = machine_text(BuildInfo("gcc", FLAGS, model.cpu_model, model.cores, 1, model.to_dict()))
    assert "Topology: this job runs on" in text and "Caches: L1d" in text


def _model_with_peak(tmp_path: Path, peak: float) -> MachineModel:
    model = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    return MachineModel.from_dict({**model.to_dict(), "peak_gflops": peak})


def test_a_reference_within_the_peak_is_ok_and_measures_nothing(tmp_path):
    model = _model_with_peak(tmp_path, 100.0)
    before = machine.measure_count
    same, check = machine.check_peak(tmp_path, model, 80.0)
    assert same is model and check["status"] == "ok" and check["pct_of_peak"] == 80.0
    assert machine.measure_count == before


def test_a_reference_above_the_peak_remeasures_and_raises_the_peak_to_it(tmp_path):
    real = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    low = MachineModel.from_dict({**real.to_dict(), "peak_gflops": real.peak_gflops / 100})
    above = real.peak_gflops * 5  # no FMA benchmark reaches five times itself
    before = machine.measure_count
    model, check = machine.check_peak(tmp_path, low, above)
    assert machine.measure_count == before + 1  # measured again
    assert check["status"] == "exceeded" and "measured again" in check["reason"]
    assert model.peak_gflops == pytest.approx(above, rel=1e-3)
    assert model.peak["floor"]["fma_gflops"] < above
    # the cache now holds the raised peak: later evaluations use it, and say why
    cached = [read_json(p, "machine") for p in tmp_path.glob("*.json")]
    assert any(c["peak"].get("floor") for c in cached)
    r = machine.roofline(above * 1e9, 1.0, 1.0, model)
    assert r["pct_of_roofline"] <= 100.0 + 1e-6 and "above_roof" not in r


def test_a_figure_above_the_roof_says_why():
    model = {"peak_gflops": 10.0, "bandwidth_gbs": 10.0}
    compute = machine.roofline(20e9, 1e6, 1.0, model)  # 20 GFLOP/s over a 10 GFLOP/s peak
    assert compute["pct_of_roofline"] > 100 and "peak is too low" in compute["above_roof"]
    memory = machine.roofline(1e9, 2e9, 0.01, model)  # 100 GFLOP/s, memory roof 5
    assert "caches serve more" in memory["above_roof"]
    assert "above_roof" not in machine.roofline(1e9, 1e6, 1.0, model)
    # a float hair above the peak (295.45000000000005 over 295.45) is not above the roof
    hair = {"peak_gflops": 295.45, "bandwidth_gbs": 10.0}
    assert "above_roof" not in machine.roofline(295.45000000000005e9, 1e6, 1.0, hair)


def test_a_summary_never_shows_a_figure_above_the_roofline_without_a_warning(tmp_path):
    import json

    from hpcagents.views.summary import iteration_doubt

    model = {"peak_gflops": 100.0, "bandwidth_gbs": 10.0}
    roof = machine.roofline(1e9, 4e9, 1 / 2.525, model)  # dgemv-like: 101% of a 2.5 GF/s roof
    ev = tmp_path / "evaluation.json"
    ev.write_text(json.dumps({"roofline": roof, "provenance": {}}))
    sel = {"evaluation": str(ev), "gflops": 2.525, "pct_of_roofline": roof["pct_of_roofline"]}
    words = iteration_doubt({"iteration": 0, "selected": sel}, None, "MKL")["warnings"]
    assert any("101.0% of the roofline" in w and "bandwidth was measured low" in w for w in words)
    sel["pct_of_roofline"] = 99.0
    words = iteration_doubt({"iteration": 0, "selected": sel}, None, "MKL")["warnings"]
    assert not any("roofline" in w for w in words)
