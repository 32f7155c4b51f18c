"""The machine model: measured once per host/compiler/flags/threads, cached, and the
roofline arithmetic that turns a timed run into % of what the machine can do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.judge import machine
from hpcagents.judge.machine import (
    BenchSettings,
    MachineError,
    MachineModel,
    machine_model,
    roofline,
)

# Short runs and small arrays: these tests check the mechanics, not the figures (the
# figures come from tests/bench/machine_model.py). Nothing here asserts on speed.
QUICK = BenchSettings(
    peak_run_s=0.002, peak_runs=3, stream_runs=2, stream_min_mib=4, stream_max_mib=4
)
FLAGS = ("-O2", "-march=native", "-fopenmp")


def test_the_second_call_reads_the_cache_and_measures_nothing(tmp_path):
    before = machine.measure_count
    first = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    files = list(tmp_path.glob("*.json"))
    assert machine.measure_count == before + 1 and len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    assert machine.measure_count == before + 1
    assert files[0].stat().st_mtime_ns == mtime
    assert second == first
    refreshed = machine_model(tmp_path, "gcc", FLAGS, 1, refresh=True, settings=QUICK)
    assert machine.measure_count == before + 2 and refreshed.measured_at >= first.measured_at


def test_threads_and_flags_are_part_of_the_key(tmp_path):
    one = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    two = machine_model(tmp_path, "gcc", FLAGS, 2, settings=QUICK)
    serial = machine_model(tmp_path, "gcc", ("-O2",), 1, settings=QUICK)
    assert len({one.key, two.key, serial.key}) == 3
    assert len(list(tmp_path.glob("*.json"))) == 3
    assert one.threads == 1 and two.threads == 2
    # with threads, the one-thread figure is measured too: a busy node shows as poor scaling
    assert two.peak["single_thread_gflops"] > 0 and two.peak["scaling"] > 0
    assert ("warning" in two.peak) == (two.peak["scaling"] < machine.MIN_SCALING)
    # without -fopenmp the benchmark cannot use threads, and the model says so
    assert machine_model(tmp_path, "gcc", ("-O2",), 2, settings=QUICK).threads == 1


def test_a_model_measured_elsewhere_is_found_by_host(tmp_path):
    model = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    found = machine.find_cached(tmp_path, model.host, "gcc", FLAGS, 1)
    assert found == model
    assert machine.find_cached(tmp_path, "another-node", "gcc", FLAGS, 1) is None
    assert machine.find_cached(tmp_path, model.host, "gcc", FLAGS, 2) is None


def test_the_benchmark_figures_are_positive_and_physically_possible(tmp_path):
    model = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    assert model.peak_gflops > 0 and model.bandwidth_gbs > 0
    lanes, bits = model.peak["lanes"], model.peak["vector_bits"]
    assert lanes * 64 == bits
    # the widest vector the flags enable is what the benchmark used; with AVX-512 the
    # 256-bit build ran too, and the better of the two is the peak
    isa = model.compiler_isa
    widest = 512 if "avx512f" in isa else 256 if "avx" in isa else 128
    if widest == 512:
        assert bits in (512, 256) and set(model.peak["variants_gflops"]) == {"512", "256"}
    else:
        assert bits == widest and "variants_gflops" not in model.peak
    # an upper bound no x86 core reaches (4 FMA pipes at 6 GHz): a miscount would pass it
    assert model.peak_gflops < model.threads * lanes * 2 * 4 * 6.0
    assert model.bandwidth_gbs < 10_000
    assert model.stream["wrong"] == 0 and model.stream["array_mib"] == 4.0
    assert model.cc_version.startswith("gcc") and model.caches and model.isa


def test_a_compiler_that_cannot_build_the_benchmark_is_a_clear_error(tmp_path):
    with pytest.raises(MachineError, match="does not build with .*-fno-such-option"):
        machine_model(tmp_path, "gcc", ("-fno-such-option",), 1, settings=QUICK)
    with pytest.raises(MachineError, match="cannot be run"):
        machine_model(tmp_path, "/nonexistent/cc", FLAGS, 1, settings=QUICK)
    assert not list(tmp_path.glob("*.json"))


def test_the_dict_form_round_trips(tmp_path):
    model = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    data = json.loads(json.dumps(model.to_dict()))
    assert MachineModel.from_dict(data) == model
    assert data["ridge_intensity"] == pytest.approx(model.peak_gflops / model.bandwidth_gbs, 1e-3)


MODEL = {"peak_gflops": 100.0, "bandwidth_gbs": 20.0}  # ridge at 5 flop/byte


def test_roofline_of_a_memory_bound_run():
    # 1 GFLOP over 1 GB: intensity 1, the memory roof is 20 GFLOP/s; 10 GFLOP/s is half
    r = roofline(1e9, 1e9, 0.1, MODEL)
    assert r["arithmetic_intensity"] == 1.0
    assert r["attainable_gflops"] == pytest.approx(20.0)
    assert r["achieved_gflops"] == pytest.approx(10.0)
    assert r["bound"] == "memory" and r["pct_of_roofline"] == pytest.approx(50.0)
    assert r["ridge_intensity"] == 5.0


def test_roofline_of_a_compute_bound_run():
    # dgemm 1000^3: 2e9 flops, 32e6 bytes, intensity 62.5; the peak is the roof
    r = roofline(2e9, 32e6, 0.05, MODEL)
    assert r["arithmetic_intensity"] == pytest.approx(62.5)
    assert r["attainable_gflops"] == 100.0 and r["bound"] == "compute"
    assert r["pct_of_roofline"] == pytest.approx(40.0)


def test_roofline_at_the_ridge_and_with_a_model_object(tmp_path):
    at_ridge = roofline(5e9, 1e9, 0.05, MODEL)
    assert at_ridge["attainable_gflops"] == pytest.approx(100.0)
    assert at_ridge["bound"] == "compute" and at_ridge["pct_of_roofline"] == pytest.approx(100.0)
    model = machine_model(tmp_path, "gcc", FLAGS, 1, settings=QUICK)
    r = roofline(1.0, 1.0, 1.0, model)
    assert r["peak_gflops"] == model.peak_gflops


@pytest.mark.parametrize(
    ("flops", "bytes_", "seconds"), [(0, 1, 1), (1, 0, 1), (1, 1, 0), (float("nan"), 1, 1)]
)
def test_roofline_rejects_what_has_no_position(flops, bytes_, seconds):
    with pytest.raises(ValueError, match="roofline"):
        roofline(flops, bytes_, seconds, MODEL)


def test_sizes_and_cache_labels_read_like_lscpu():
    assert machine._size_kib("32K") == 32 and machine._size_kib("1 MiB") == 1024
    assert machine._size_kib("32768K") == 32768 and machine._size_kib("2048") == 2
    l3 = {"level": 3, "type": "Unified", "size_kib": 32768, "shared_by": 8}
    assert machine.cache_label(l3) == "L3 32 MiB shared by 8 CPUs"
    assert machine.cache_label({"level": 1, "type": "Data", "size_kib": 48, "shared_by": 1}) == (
        "L1d 48 KiB per core"
    )
    assert machine.isa_features({"pni", "avx2", "avx512f", "amx_tile", "fma", "ht"}) == (
        "sse3",
        "avx2",
        "fma",
        "amx_tile",
        "avx512f",
    )


def test_the_machine_command_prints_the_model(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcagents",
            "machine",
            "--cache-dir",
            str(tmp_path),
            "--threads",
            "1",
            "--cflags=-O2 -march=native -fopenmp",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_DIR,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["threads"] == 1 and data["peak_gflops"] > 0 and data["bandwidth_gbs"] > 0
    assert list(tmp_path.glob("*.json"))


def test_the_agents_are_told_the_model_of_the_node_that_timed_the_kernels(tmp_path):
    import dataclasses
    import socket

    from hpcagents.campaign.steps import build_info
    from hpcagents.spec.config import load_config

    cfg = dataclasses.replace(
        load_config(REPO_DIR / "config" / "config.yaml"), cflags=FLAGS, threads=1
    )
    model = machine_model(tmp_path, cfg.cc, FLAGS, 1, settings=QUICK)
    here = {"machine": {"host": socket.gethostname(), "cpu_model": "X", "cores": 2}}
    before = machine.measure_count
    build = build_info(cfg, here, tmp_path)
    assert build.machine == model.to_dict() and build.threads == 1
    # timed on another node (under Slurm): only what that node cached, never this one's
    there = {"machine": {"host": "compute-17", "cpu_model": "X", "cores": 64}}
    build = build_info(cfg, there, tmp_path)
    assert build.machine is None and build.cpu_model == "X" and build.cores == 64
    assert machine.measure_count == before


def test_cache_sizes_from_lscpu_where_sysfs_has_none(tmp_path):
    data = {
        "caches": [
            {"name": "L1d", "one-size": "49152", "all-size": "3145728", "type": "Data", "level": 1},
            {
                "name": "L3",
                "one-size": "62914560",
                "all-size": "125829120",
                "type": "Unified",
                "level": 3,
            },
        ]
    }
    assert machine.caches_from_lscpu(data, 128) == (
        {"level": 1, "type": "Data", "size_kib": 48, "shared_by": 2},
        {"level": 3, "type": "Unified", "size_kib": 61440, "shared_by": 64},
    )
    # a cpu dir without cache entries (tmp_path) falls back to lscpu: the same levels
    fallback, sysfs = machine.caches(tmp_path), machine.caches()
    assert {c["level"] for c in fallback} == {c["level"] for c in sysfs}
    assert machine.last_level_cache_bytes() > 0
