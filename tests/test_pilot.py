"""The evaluation pilot's hand-over protocol, without Slurm (the pilot loop runs here).

What Slurm adds (submission, exclusivity, a cancelled pilot) is in tests/test_slurm.py.
"""

from __future__ import annotations

import json
import os
import sys
import time

from hpcagents.cluster.pilot import (
    STALE_S,
    Paths,
    PilotResources,
    cpu_model,
    node_name,
    refused_nodes,
    serve,
)

STAMP = "import time,sys; a=time.time(); time.sleep(0.2); print(a, time.time()); sys.exit(3)"


def _request(paths: Paths, rid: str, created: float, alive: bool = True, **extra) -> None:
    argv = [sys.executable, "-c", STAMP]
    req = {"argv": argv, "cwd": str(paths.root), "created": created, "alone": False, **extra}
    paths.queued(rid).write_text(json.dumps(req))
    paths.alive(rid).touch()
    if not alive:
        old = time.time() - STALE_S - 10
        os.utime(paths.alive(rid), (old, old))


def test_pilot_runs_requests_in_order_one_at_a_time_and_drops_those_nobody_waits_for(tmp_path):
    paths = Paths(tmp_path / "pilot")
    _request(paths, "b", created=2.0)
    _request(paths, "a", created=1.0)
    _request(paths, "orphan", created=0.5, alive=False)
    assert serve(paths.root, runtime_min=10, reserve_min=0, idle_s=0.3) == 0
    spans = {}
    for rid in ("a", "b"):
        done = json.loads(paths.done(rid).read_text())
        assert done["rc"] == 3 and done["job_id"].startswith("local-")
        start, end = map(float, paths.log(rid).read_text().split())
        spans[rid] = (start, end)
    assert spans["a"][1] <= spans["b"][0], "requests ran in order, never side by side"
    assert not paths.done("orphan").exists() and not paths.queued("orphan").exists()
    assert not list((paths.root / "claimed").iterdir())
    # the pool's busy account: one line per step run, with when it was queued
    busy = [json.loads(line) for line in (paths.root / "busy.jsonl").read_text().splitlines()]
    assert [(b["rid"], b["queued"]) for b in busy] == [("a", 1.0), ("b", 2.0)]
    assert all(b["queued"] <= b["start"] < b["end"] for b in busy)
    assert {b["step"] for b in busy} == {os.path.basename(sys.executable)}  # not hpcagents


def test_an_idle_pilot_yields_its_node_to_a_request_retried_alone(tmp_path):
    paths = Paths(tmp_path / "pilot")
    _request(paths, "poison", created=1.0, alone=True)
    start = time.monotonic()
    assert serve(paths.root, runtime_min=10, reserve_min=0, idle_s=60) == 0
    assert time.monotonic() - start < 30, "it left at once instead of idling"
    assert paths.queued("poison").exists(), "only the request's own pilot may run it"
    assert serve(paths.root, runtime_min=10, reserve_min=0, idle_s=60, only="poison") == 0
    assert json.loads(paths.done("poison").read_text())["rc"] == 3


def test_pilot_runs_only_its_pools_requests(tmp_path):
    paths = Paths(tmp_path / "pilot")
    _request(paths, "mine", created=1.0, pool="p1")
    _request(paths, "other", created=0.5, pool="p2")
    assert serve(paths.root, runtime_min=10, reserve_min=0, idle_s=0.3, pool="p1") == 0
    assert json.loads(paths.done("mine").read_text())["rc"] == 3
    assert not paths.done("other").exists() and paths.queued("other").exists()
    pinned = json.loads(paths.node_type.read_text())
    assert pinned["cpu_model"] == cpu_model() and pinned["first_node"] == node_name()


def test_a_node_of_another_cpu_model_times_nothing_and_is_excluded_from_then_on(tmp_path):
    paths = Paths(tmp_path / "pilot")
    paths.node_type.write_text(json.dumps({"cpu_model": "Other CPU 9000", "first_node": "n7"}))
    _request(paths, "r", created=1.0, pool="p1")
    assert serve(paths.root, runtime_min=10, reserve_min=0, idle_s=30, pool="p1") == 0
    assert not paths.done("r").exists() and paths.queued("r").exists()
    assert refused_nodes(paths) == (node_name(),)
    exclude = PilotResources().sbatch_args(refused_nodes(paths))
    assert f"--exclude={node_name()}" in exclude


def test_pools_differ_by_what_decides_the_node_type_not_by_time_limits():
    a = PilotResources(partition="icx", extra=("--exclusive",), runtime_min=60)
    assert a.pool == PilotResources(partition="icx", extra=("--exclusive",), max_nodes=8).pool
    assert a.pool != PilotResources(partition="spr", extra=("--exclusive",)).pool
    assert a.pool != PilotResources(partition="icx", extra=("--constraint=avx512",)).pool
    assert "--no-requeue" in a.sbatch_args(), "a requeued pilot would keep a dead job's id"
