"""The demo: scripted model up, one campaign with the local executor, table, server down.

The scripted model is a stand-in for an LLM (hand-written answers): the demo measures
the pipeline — compile, validate, repair, time, select — not a model.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from .artifacts import REPO_DIR, read_json
from .summary import table


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the scripted model exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the scripted model did not answer at {url} within {timeout_s} s")


def run_demo(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    if not config_path.is_absolute():
        config_path = REPO_DIR / config_path
    raw = yaml.safe_load(config_path.read_text())
    state = REPO_DIR / "results" / ".hpcagents"
    state.mkdir(parents=True, exist_ok=True)
    server_log = state / "scripted-server.log"
    request_log = state / "scripted-requests.jsonl"
    print(
        f"[demo] starting the scripted model on 127.0.0.1:{args.port} "
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
        _wait_healthy(f"http://127.0.0.1:{args.port}/v1/models", server)
        snakemake = [
            sys.executable,
            "-m",
            "snakemake",
            "--directory",
            str(REPO_DIR),
            "--snakefile",
            str(REPO_DIR / "Snakefile"),
        ]
        # A previous run killed mid-way leaves Snakemake's lock behind: drop it. (Only
        # safe because no other Snakemake runs in this checkout at the same time.)
        subprocess.run([*snakemake, "--unlock"], capture_output=True, check=False)
        cmd = [
            *snakemake,
            "--cores",
            args.cores,
            "--configfile",
            str(config_path),
            *args.snakemake_args,
        ]
        print(f"[demo] {' '.join(cmd)}", flush=True)
        rc = subprocess.call(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if rc != 0:
            print(f"[demo] snakemake failed (exit {rc}); rerun `make demo` to resume.")
            return rc
        for kernel in raw["kernels"]:
            summary = read_json(REPO_DIR / "results" / kernel / "summary.json", "summary")
            print(f"\n== {kernel}: results/{kernel}/summary.json ==")
            print(table(summary))
        return 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        print("[demo] scripted model stopped", flush=True)
