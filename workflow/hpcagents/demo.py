"""The demo: scripted model up, one campaign with the local executor, table, server down.

The scripted model is a stand-in for an LLM (hand-written answers): the demo measures
the pipeline — compile, validate, repair, time, select — not a model.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import yaml

from hpcagents.cluster.run import run_recorded, snakemake_command, unlock
from hpcagents.core.artifacts import REPO_DIR, read_json, write_text_atomic
from hpcagents.core.layout import RESULTS, CampaignLayout
from hpcagents.spec.frozen import ACCEPT_ENV
from hpcagents.views.summary import table

#: Model ids of the scripted stand-in start with this (as summary.json's stand_in flag).
STAND_IN_PREFIX = "scripted"


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
    from hpcagents.cluster.campaigns import ScriptedModelProcess, exit_on_sigterm
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
    print(
        f"[demo] starting the scripted model on 127.0.0.1, port {args.port or 'any free one'} "
        "(a STAND-IN for an LLM: it measures the pipeline, not a model)",
        flush=True,
    )
    server = ScriptedModelProcess(state, latency=args.latency, port=args.port)
    try:
        server.start()
        url = server.url
        print(f"[demo] scripted model at {url} (identity checked)", flush=True)
        config_file = state / "demo-config.yaml"
        write_text_atomic(config_file, yaml.safe_dump(demo_config(raw, url), sort_keys=False))
        # A previous run killed mid-way leaves Snakemake's lock behind: drop it (safe: no
        # campaign runs in this directory, checked above).
        unlock(snakemake_command(workdir, config_file))
        cmd = snakemake_command(workdir, config_file, cores=args.cores, extra=args.snakemake_args)
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
        server.stop()
        print("[demo] scripted model stopped", flush=True)
