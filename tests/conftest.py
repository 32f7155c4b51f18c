"""Shared fixtures: the scripted model on real HTTP, and campaigns in temp directories."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.scripted import serve


@pytest.fixture(autouse=True, scope="session")
def _one_machine_model_per_session(tmp_path_factory) -> None:
    """Every test campaign runs on this host with the same compiler, flags and threads:
    the machine model is measured once for the session, not once per campaign."""
    os.environ.setdefault("HPCAGENTS_MACHINE_CACHE", str(tmp_path_factory.mktemp("machine")))


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
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO_DIR / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *extra,
    ]


def run_snakemake(workdir: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(workdir, *extra), capture_output=True, text=True, timeout=timeout
    )


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
