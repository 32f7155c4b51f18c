"""The demo: scripted model up, one campaign with the local executor, table, server down.

The scripted model is a stand-in for an LLM (hand-written answers): the demo measures
the pipeline — compile, validate, repair, time, select — not a model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from hpcagents.cluster.run import run_recorded
from hpcagents.core.artifacts import REPO_DIR, read_json, write_text_atomic
from hpcagents.core.layout import RESULTS, CampaignLayout
from hpcagents.spec.frozen import ACCEPT_ENV
from hpcagents.views.summary import table

#: Model ids of the scripted stand-in start with this (as summary.json's stand_in flag).
STAND_IN_PREFIX = "scripted"


def _wait_for_port(port_file: Path, proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    """The port the scripted model bound (it writes it once listening)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the scripted model exited with code {proc.returncode}")
        try:
            return int(port_file.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"the scripted model did not start listening within {timeout_s} s")


def check_identity(url: str, instance: str, timeout_s: float = 5.0) -> None:
    """Fail unless the server answering ``url`` lists our identity token in /v1/models.

    A port can be taken over between runs (another demo, another campaign): a campaign
    must never talk to a server it did not start and believe it is its own.
    """
    with urllib.request.urlopen(f"{url}/models", timeout=timeout_s) as resp:
        models = json.loads(resp.read()).get("data") or []
    if not any(m.get("instance") == instance for m in models):
        raise RuntimeError(
            f"the server at {url} is not the scripted model this demo started "
            "(its identity token is missing from /v1/models)"
        )


def demo_config(raw: dict, url: str) -> dict:
    """The user's config with every scripted-model server pointed at the demo's server."""
    out = copy.deepcopy(raw)
    for server in out["llm"]["servers"]:
        if str(server.get("model", "")).startswith(STAND_IN_PREFIX):
            server["base_url"] = url
    return out


def demo_config_path(given: str | None, cwd: Path) -> Path:
    """The config the demo runs: ``--config`` as the user wrote it, relative to where they
    stand; without one, ``config/config.yaml`` there, else the checkout's documented one."""
    if given:
        path = Path(given).expanduser()
        return path if path.is_absolute() else cwd / path
    here = cwd / "config" / "config.yaml"
    return here if here.is_file() else REPO_DIR / "config" / "config.yaml"


def run_demo(args: argparse.Namespace) -> int:
    from hpcagents.spec.config import ConfigError, load_config

    workdir = Path(args.dir).resolve() if getattr(args, "dir", None) else Path.cwd()
    config_path = demo_config_path(args.config, Path.cwd())
    try:
        load_config(config_path)  # file and line of a YAML error, the key of a bad value
    except ConfigError as exc:
        print(f"hpcagents demo: error: {exc}", file=sys.stderr)
        return 2
    raw = yaml.safe_load(config_path.read_text())
    print(f"[demo] config {config_path}; results in {workdir / RESULTS}", flush=True)
    from hpcagents.cluster.campaigns import exit_on_sigterm
    from hpcagents.cluster.run import end_orphans, running_campaign
    from hpcagents.spec.frozen import precheck

    layout = CampaignLayout(workdir / RESULTS)
    stale = precheck(config_path, layout.root, args.accept_changes)
    if stale:
        print(f"hpcagents demo: {stale}", file=sys.stderr)
        return 2
    exit_on_sigterm()  # a `kill` of the demo still stops its scripted model
    live = running_campaign(workdir)
    if live:
        print(
            f"hpcagents demo: a campaign is already running in {workdir} (pid "
            f"{live['pid']}); `hpcagents status` shows where it is",
            file=sys.stderr,
        )
        return 2
    for note in end_orphans(workdir, slurm=False):  # before our own server starts here
        print(f"[demo] {note}", flush=True)
    state = layout.state
    state.mkdir(parents=True, exist_ok=True)
    server_log = state / "scripted-server.log"
    request_log = state / "scripted-requests.jsonl"
    port_file = state / f"scripted-port.{os.getpid()}"
    instance = secrets.token_hex(16)
    port_file.unlink(missing_ok=True)
    print(
        f"[demo] starting the scripted model on 127.0.0.1, port {args.port or 'any free one'} "
        "(a STAND-IN for an LLM: it measures the pipeline, not a model)",
        flush=True,
    )
    with server_log.open("a") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hpcagents",
                "scripted-model",
                "--port",
                str(args.port),
                "--port-file",
                str(port_file),
                "--instance",
                instance,
                "--log",
                str(request_log),
                "--latency",
                str(args.latency),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        port = _wait_for_port(port_file, server)
        url = f"http://127.0.0.1:{port}/v1"
        check_identity(url, instance)
        print(f"[demo] scripted model at {url} (identity checked)", flush=True)
        config_file = state / "demo-config.yaml"
        write_text_atomic(config_file, yaml.safe_dump(demo_config(raw, url), sort_keys=False))
        snakemake = [
            sys.executable,
            "-m",
            "snakemake",
            "--directory",
            str(workdir),
            "--snakefile",
            str(REPO_DIR / "Snakefile"),
        ]
        # A previous run killed mid-way leaves Snakemake's lock behind: drop it (safe: no
        # campaign runs in this directory, checked above).
        subprocess.run([*snakemake, "--unlock"], capture_output=True, check=False)
        cmd = [
            *snakemake,
            *(["--cores", args.cores] if args.cores else []),
            "--configfile",
            str(config_file),
            *args.snakemake_args,
        ]
        print(f"[demo] {' '.join(cmd)}", flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if args.accept_changes:
            env[ACCEPT_ENV] = "1"
        rc = run_recorded(workdir, cmd, env, "local")
        if rc != 0:
            print(
                f"[demo] snakemake failed (exit {rc}); rerun the same command to resume.",
                flush=True,
            )
            return rc
        for kernel in raw["kernels"]:
            path = layout.kernel(kernel).summary()
            summary = read_json(path, "summary")
            print(f"\n== {kernel}: {path} ==")
            print(table(summary))
        return 0
    finally:
        port_file.unlink(missing_ok=True)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        print("[demo] scripted model stopped", flush=True)
