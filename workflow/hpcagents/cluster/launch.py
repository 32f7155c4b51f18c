"""LLM servers started by the campaign as Slurm jobs (``llm.servers[].launch``).

Why: on a supercomputer the users' open-weight models run on GPU nodes of the same
cluster, and a server's address is only known once Slurm has placed it. A server entry
may therefore say how to start it instead of where it is::

    - name: gpt-oss
      model: openai/gpt-oss-120b
      launch:
        command: "vllm serve {model} --host {host} --port {port}"
        slurm: {partition: gpu, gpus: 4, time: "08:00:00"}

``hpcagents run`` (either executor) starts every such server as one Slurm job before
Snakemake runs; inside the job, ``hpcagents launched-server`` picks a free port, writes
host and port to a file in the campaign directory (the shared file system) and execs the
command. The campaign waits until ``GET <base_url>/models`` answers (with a timeout and a
message naming the job and its log), writes the user's config with the learned
``base_url`` filled in (``results/.hpcagents/launched/config.yaml``) and hands THAT to
Snakemake, so no other part of the workflow knows servers can be launched. At the end the
jobs are cancelled unless ``keep: true``; a resumed campaign reuses a server whose job is
still alive and answering (checked by the ``{instance}`` token when the command lists it).

Placeholders in ``command``: {model}, {port}, {host} (the bind address, 0.0.0.0),
{instance} (a token for the server to list in /v1/models, where the server supports it),
{python} (this venv's interpreter).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import write_text_atomic
from hpcagents.core.layout import CampaignLayout
from hpcagents.spec.config import ConfigError

STATE_DIR = CampaignLayout().launched()
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING"}


@dataclass(frozen=True)
class Launch:
    """One server to start: its config entry's ``launch`` block."""

    name: str
    model: str
    command: str
    slurm: dict[str, Any]
    base_path: str = "/v1"
    startup_timeout_s: float = 900.0
    keep: bool = False

    @staticmethod
    def from_entry(entry: dict[str, Any]) -> Launch:
        spec = entry["launch"]
        return Launch(
            name=entry["name"],
            model=entry["model"],
            command=spec["command"],
            slurm=dict(spec.get("slurm") or {}),
            base_path="/" + str(spec.get("base_path", "/v1")).strip("/"),
            startup_timeout_s=float(spec.get("startup_timeout_s", 900)),
            keep=bool(spec.get("keep", False)),
        )

    def sbatch_args(self) -> list[str]:
        s = self.slurm
        args = [f"--job-name=hpcagents-llm-{self.name}", "--nodes=1", "--ntasks=1"]
        for key, flag in (
            ("partition", "--partition"),
            ("account", "--account"),
            ("time", "--time"),
            ("cpus_per_task", "--cpus-per-task"),
            ("mem_mb", "--mem"),
            ("gpus", "--gpus"),
            ("gres", "--gres"),
            ("constraint", "--constraint"),
        ):
            if s.get(key) not in (None, ""):
                args.append(f"{flag}={s[key]}")
        return args + [str(x) for x in s.get("extra", [])]


@dataclass
class Started:
    """A launched server as the campaign knows it (results/.hpcagents/launched/<name>.json)."""

    name: str
    job_id: str
    instance: str
    base_url: str | None = None
    reused: bool = False


def launches(raw: dict[str, Any]) -> list[Launch]:
    return [Launch.from_entry(s) for s in raw["llm"]["servers"] if s.get("launch")]


def _job_state(job_id: str) -> str | None:
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    return out[0] if out else None


def _models(url: str, timeout_s: float = 3.0) -> str | None:
    """The body of GET <base_url>/models, None when it does not answer 200."""
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=timeout_s) as resp:
            return resp.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _healthy(launch: Launch, started: Started) -> bool:
    if not started.base_url:
        return False
    body = _models(started.base_url)
    if body is None:
        return False
    return "{instance}" not in launch.command or started.instance in body


def _submit(launch: Launch, state_dir: Path) -> Started:
    instance = uuid.uuid4().hex
    addr = (state_dir / f"{launch.name}.addr.json").resolve()
    addr.unlink(missing_ok=True)
    inner = [
        sys.executable,
        "-m",
        "hpcagents",
        "launched-server",
        "--addr-file",
        str(addr),
        "--command",
        launch.command,
        "--model",
        launch.model,
        "--instance",
        instance,
    ]
    cmd = [
        "sbatch",
        "--parsable",
        # not the campaign directory: `hpcagents run --slurm` cancels the Slurm jobs of a
        # killed run submitted from there, and a live server is to be reused instead
        f"--chdir={state_dir.resolve()}",
        f"--output={state_dir.resolve()}/{launch.name}-%j.out",
        *launch.sbatch_args(),
        "--wrap",
        "exec " + shlex.join(inner),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ConfigError(
            f"llm server '{launch.name}': sbatch refused its launch "
            f"({' '.join(launch.sbatch_args())}): {proc.stderr.strip()}; change "
            f"llm.servers[{launch.name}].launch.slurm in the config"
        )
    return Started(launch.name, proc.stdout.strip().split(";")[0], instance)


def _wait(launch: Launch, started: Started, state_dir: Path, poll_s: float = 1.0) -> None:
    """Until the job has written its address and the server answers, or a clear error."""
    addr = state_dir / f"{launch.name}.addr.json"
    log = state_dir / f"{launch.name}-{started.job_id}.out"
    deadline = time.monotonic() + launch.startup_timeout_s
    while time.monotonic() < deadline:
        state = _job_state(started.job_id)
        if state not in LIVE_STATES and state != "UNKNOWN":
            tail = log.read_text()[-1500:] if log.exists() else "(no log)"
            raise ConfigError(
                f"llm server '{launch.name}': its Slurm job {started.job_id} ended "
                f"({state or 'gone'}) before the server answered; its log {log}:\n{tail}"
            )
        if started.base_url is None and addr.exists():
            info = json.loads(addr.read_text())
            started.base_url = f"http://{info['host']}:{info['port']}{launch.base_path}"
        if _healthy(launch, started):
            return
        time.sleep(poll_s)
    subprocess.run(["scancel", started.job_id], capture_output=True, check=False)
    where = started.base_url or "no address written yet (still pending?)"
    raise ConfigError(
        f"llm server '{launch.name}': not answering GET /models within "
        f"{launch.startup_timeout_s:.0f} s (launch.startup_timeout_s) of Slurm job "
        f"{started.job_id} ({where}); the job was cancelled; see {log}"
    )


def start_servers(raw: dict[str, Any], state_dir: Path = STATE_DIR) -> list[Started]:
    """Start (or reuse) every launched server of ``raw``; fill in their base_url in place."""
    state_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for launch in launches(raw):
        path = state_dir / f"{launch.name}.json"
        started = None
        try:
            prev = Started(**json.loads(path.read_text()))
            if _job_state(prev.job_id) in LIVE_STATES and _healthy(launch, prev):
                prev.reused = True
                started = prev
        except (OSError, ValueError, TypeError):
            pass
        if started is None:
            started = _submit(launch, state_dir)
            write_text_atomic(path, json.dumps(started.__dict__))
            _wait(launch, started, state_dir)
            write_text_atomic(path, json.dumps({**started.__dict__, "reused": False}))
        for entry in raw["llm"]["servers"]:
            if entry["name"] == launch.name:
                entry["base_url"] = started.base_url
        out.append(started)
    return out


def stop_servers(
    raw: dict[str, Any], keep_all: bool = False, state_dir: Path = STATE_DIR
) -> list[str]:
    """Cancel the launched servers' jobs, except those marked ``keep`` (or all kept)."""
    lines = []
    for launch in launches(raw):
        path = state_dir / f"{launch.name}.json"
        try:
            started = Started(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if keep_all or launch.keep:
            lines.append(f"kept llm server '{launch.name}' (Slurm job {started.job_id})")
            continue
        subprocess.run(["scancel", started.job_id], capture_output=True, check=False)
        path.unlink(missing_ok=True)
        lines.append(f"stopped llm server '{launch.name}' (Slurm job {started.job_id})")
    return lines


# ------------------------------------------------------------- inside the server's job


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def serve_launched(addr_file: Path, command: str, model: str, instance: str) -> int:
    """Pick a port, write where the server will be, exec its command (never returns)."""
    port = free_port()
    fields = {
        "model": shlex.quote(model),
        "port": str(port),
        "host": "0.0.0.0",
        "instance": shlex.quote(instance),
        "python": shlex.quote(sys.executable),
    }
    line = command.format(**fields)
    info = {
        "host": socket.gethostname(),
        "port": port,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "command": line,
    }
    write_text_atomic(addr_file, json.dumps(info))
    print(f"launched-server: {line}", flush=True)
    os.execvp("bash", ["bash", "-c", "exec " + line])
    return 127  # not reached
