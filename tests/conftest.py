"""Shared fixtures: the scripted model on real HTTP, and campaigns in temp directories."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hpcagents.cluster.run import snakemake_command
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.scripted import serve


def shared_tmp(tmp_path_factory) -> Path:
    """The session's temporary root, one for all pytest-xdist workers of a run (each worker
    has a folder of its own below it), so what the session does once is done once."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, mode)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(autouse=True, scope="session")
def _one_machine_model_per_session(tmp_path_factory) -> None:
    """Every test campaign runs on this host with the same compiler, flags and threads:
    the machine model is measured once for the session (all xdist workers share it: the
    model's cache takes a lock, so the second worker reads what the first measured), not
    once per campaign."""
    machine = shared_tmp(tmp_path_factory) / "machine"
    machine.mkdir(exist_ok=True)
    os.environ.setdefault("HPCAGENTS_MACHINE_CACHE", str(machine))


def made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """``make(folder)`` once per session, whichever xdist worker asks first; the others wait
    for it and share the folder. A ``make`` that fails leaves nothing: the next asker makes
    it again (and fails the same way, naming why)."""
    root = shared_tmp(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with _flock(root / f"{name}.lock", fcntl.LOCK_EX):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def _small_campaign(root: Path) -> None:
    server = serve(host="127.0.0.1", port=0, latency=0.05)
    try:
        raw = campaign_config(server.url)
        raw["campaign"].update(iterations=1, pgs=2)
        raw["evaluation"].update(bench_size=128)
        write_campaign(root, raw)
        proc = run_snakemake(root)
        assert proc.returncode == 0, proc.stderr[-4000:]
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def small_finished_campaign(tmp_path_factory) -> Path:
    """A real finished campaign (its directory): 1 iteration x 2 PGs at bench size 128 (one
    PG needs a repair), made once per session for every test that only reads one (the
    report's and the status's); a test that changes it works on a copy."""
    return made_once(tmp_path_factory, "small-campaign", _small_campaign)


# -- sharing the machine between pytest-xdist workers (make test runs two) -----------------
# make test hands whole files to the workers (--dist loadfile): a module's fixtures (a
# campaign its tests share, the Slurm test cluster) are made by one worker, once. (Not
# loadgroup: with pytest 9.2 it silently stops grouping, pytest-xdist issue #1386.) The
# files go out in the order below (--no-loadscope-reorder): the tests that run alone
# first, while there is little to wait for, then the longest files, so that no long file
# starts last and runs on while the other worker idles.
LONG_FILES_FIRST = (
    "test_slurm.py",
    "test_faults.py",
    "test_campaign.py",
    "test_replay.py",
    "test_llm_files.py",
    "test_adversarial.py",
    "test_llamacpp.py",
    "test_run.py",
    "test_status.py",
    "test_report.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a plain run keeps the files' order

    def rank(item) -> tuple[int, int]:
        if item.get_closest_marker("alone") is not None:
            return (0, 0)
        name = item.path.name
        if name in LONG_FILES_FIRST:
            return (1, LONG_FILES_FIRST.index(name))
        return (2, 0)

    items.sort(key=rank)  # stable: the rest keep their order


# A test marked ``alone`` (it loads every core on purpose, or its assertion compares speeds
# that another test's CPU work would skew) runs while no other test runs: each test holds
# a readers-writer lock for its whole run (setup, call, teardown, higher-scoped fixtures
# made for it included): shared, or exclusive when alone. A test that waits for it holds
# the turnstile, so the other worker's stream of tests cannot starve it. Campaigns' own
# timed calls are ordered by the workflow's host-wide timing lock, as for any two
# campaigns on one host.


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: needs the machine to itself (loads every core, or compares speeds): "
        "under pytest-xdist no other test runs meanwhile",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    root = shared_tmp(item.config._tmp_path_factory)
    turnstile, machine = root / "machine-turnstile.lock", root / "machine-share.lock"
    if item.get_closest_marker("alone") is not None:
        with _flock(turnstile, fcntl.LOCK_EX), _flock(machine, fcntl.LOCK_EX):
            yield
    else:
        with _flock(turnstile, fcntl.LOCK_EX):
            pass  # wait here while a test that runs alone is queued
        with _flock(machine, fcntl.LOCK_SH):
            yield


@pytest.fixture
def start_scripted(tmp_path) -> Iterator[Any]:
    """Start scripted models (stand-ins for an LLM) on 127.0.0.1, each on a free port."""
    servers = []

    def start(latency: float = 0.05, name: str = "scripted", **kwargs: Any) -> Any:
        log = tmp_path / f"{name}-{len(servers)}-requests.jsonl"
        server = serve(host="127.0.0.1", port=0, log_path=log, latency=latency, **kwargs)
        server.log_path = log
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def campaign_config(server_url: str, **overrides: Any) -> dict[str, Any]:
    """The shipped config, shrunk for tests, pointed at ``server_url``."""
    raw = yaml.safe_load((REPO_DIR / "config" / "config.yaml").read_text())
    raw["campaign"].update(iterations=2, pgs=4, max_repairs=2, seed=7)
    raw["evaluation"].update(bench_size=256, repeats=3, warmup=1, timeout_s=60)
    raw["llm"]["servers"] = [
        {
            "name": "scripted",
            "base_url": server_url,
            "model": "scripted-stand-in",
            "max_concurrency": 4,
            "timeout_s": 60,
        }
    ]
    raw["llm"]["max_retries"] = 1
    for dotted, value in overrides.items():
        node = raw
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return raw


def copy_kernel(name: str, kernels_dir: Path, like: str = "dgemm") -> Path:
    """A kernel folder ``kernels_dir/name`` that is the built-in ``like`` under another
    name (its kernel.yaml, sources and scripted answers), as a user's own kernel would be
    outside this checkout."""
    dst = kernels_dir / name
    shutil.copytree(REPO_DIR / "kernels" / like, dst)
    (dst / f"{like}.c").rename(dst / f"{name}.c")
    spec = (dst / "kernel.yaml").read_text()
    spec = re.sub(rf"^name: {like}$", f"name: {name}", spec, flags=re.M)
    spec = re.sub(rf"^source: {like}\.c$", f"source: {name}.c", spec, flags=re.M)
    (dst / "kernel.yaml").write_text(spec)
    return dst


def write_campaign(workdir: Path, raw: dict[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def snakemake_cmd(workdir: Path, *extra: str) -> list[str]:
    """The product's own Snakemake command line, with the campaign's config.yaml."""
    return snakemake_command(workdir, workdir / "config.yaml", extra=extra)


def run_snakemake(workdir: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(workdir, *extra), capture_output=True, text=True, timeout=timeout
    )


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
