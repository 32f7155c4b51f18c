"""Run whole campaigns from Python: the study and the suite share this.

A campaign here is what a user runs by hand: a config file written into its own working
directory and real Snakemake (``--directory``) with the project's Snakefile and profile,
so it is resumable like any campaign (rerunning the same command picks up where it
stopped). The scripted model, when asked for, runs as a separate process (product code
never imports it) on a free port, and its identity is checked so a campaign never talks
to another campaign's server that happens to listen on the same port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from hpcagents.cluster.run import call_snakemake, snakemake_command, unlock
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.core.lifeline import snakemake_processes, stop_child


class RunnerError(RuntimeError):
    """A campaign could not be started; the message says what to change."""


class ScriptedModelProcess:
    """The scripted model (a stand-in for an LLM) in a process of its own, on a free port
    (or ``port``), its identity checked; the demo, the study and the suite start it so.
    Its logs go to ``state_dir`` (scripted-server.log, scripted-requests.jsonl)."""

    def __init__(
        self,
        state_dir: Path,
        latency: float = 0.05,
        stochastic: bool = False,
        max_concurrency: int = 64,
        port: int = 0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.latency = latency
        self.stochastic = stochastic
        self.max_concurrency = max_concurrency
        self.instance = uuid.uuid4().hex
        self.proc: subprocess.Popen[bytes] | None = None
        self.requested_port = port
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 30.0) -> ScriptedModelProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.state_dir / f"scripted-{self.instance}.port"
        cmd = [
            sys.executable,
            "-m",
            "hpcagents",
            "scripted-model",
            "--port",
            str(self.requested_port),
            "--port-file",
            str(port_file),
            "--instance",
            self.instance,
            "--log",
            str(self.state_dir / "scripted-requests.jsonl"),
            "--latency",
            str(self.latency),
            "--max-concurrency",
            str(self.max_concurrency),
        ]
        if self.stochastic:
            cmd.append("--stochastic")
        # Same process group as this command: a Ctrl-C or a kill of the group stops the
        # server too, so a killed study leaves no server behind.
        with (self.state_dir / "scripted-server.log").open("a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunnerError(
                    f"the scripted model exited with code {self.proc.returncode}; see "
                    f"{self.state_dir / 'scripted-server.log'}"
                )
            text = port_file.read_text().strip() if port_file.is_file() else ""
            if text:
                self.port = int(text)
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise RunnerError(f"the scripted model wrote no port within {timeout_s} s")
        port_file.unlink(missing_ok=True)
        self._check_identity()
        return self

    def _check_identity(self) -> None:
        with urllib.request.urlopen(f"{self.url}/models", timeout=10) as resp:
            models = json.load(resp)
        tokens = {m.get("instance") for m in models.get("data", [])}
        if self.instance not in tokens:
            self.stop()
            raise RunnerError(
                f"the server on port {self.port} is not the scripted model this command "
                f"started (instance {sorted(map(str, tokens))} != {self.instance})"
            )

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc, grace_s=10)

    def __enter__(self) -> ScriptedModelProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop the scripted model."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def load_base_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_absolute() and not path.is_file():
        path = REPO_DIR / path
    from hpcagents.spec.config import read_config_yaml

    return read_config_yaml(path)


def scripted_server_entry(url: str, max_concurrency: int) -> dict[str, Any]:
    return {
        "name": "scripted",
        "base_url": url,
        "model": "scripted-stand-in",
        "api_key_env": None,
        "max_concurrency": max_concurrency,
        "timeout_s": 600,
    }


def write_config(workdir: Path, raw: dict[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(
        "# written by hpcagents (study/suite); rerun the same command to resume\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )
    tmp.replace(path)
    return path


def scripted_kernels(kernels_dir: Path | None = None) -> list[str]:
    """Kernel folders that ship a scripted/ set (the stand-in can answer for them)."""
    root = Path(kernels_dir or REPO_DIR / "kernels")
    return sorted(
        p.parent.parent.name
        for p in root.glob("*/scripted/script.yaml")
        if (p.parent.parent / "kernel.yaml").is_file()
    )


def run_campaign(
    workdir: Path,
    cores: str | None = None,
    extra: list[str] | None = None,
    log_path: Path | None = None,
) -> int:
    """Run (or resume) the campaign configured in ``workdir/config.yaml``; Snakemake's exit code.

    A lock left by a killed run is removed first, but only when no Snakemake runs in that
    directory: two runs in one directory would overwrite each other's artifacts.
    """
    workdir = Path(workdir).resolve()
    running = snakemake_processes(workdir)
    if running:
        raise RunnerError(
            f"a campaign is already running in {workdir} (snakemake pid "
            f"{', '.join(map(str, running))}); wait for it, or watch it with "
            f"`hpcagents status --dir {workdir}`"
        )
    unlock(snakemake_command(workdir, workdir / "config.yaml"))
    cmd = snakemake_command(workdir, workdir / "config.yaml", cores=cores, extra=extra or ())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if log_path is None:
        return call_snakemake(cmd, env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        return call_snakemake(cmd, env, log)
