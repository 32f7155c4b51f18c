"""``hpcagents run``: one command that starts a campaign and resumes it, for both executors.

Why a wrapper: resuming a killed Snakemake needs ``--unlock`` first, which is only safe
when no other Snakemake works in the directory; and a SIGKILL leaves the killed run's
jobs behind. Left alone, an orphaned evaluation shares the cores with the resumed run's
timings, and an orphaned Slurm job may write an artifact the resumed run is writing too.
So the wrapper:

1. refuses to start when a campaign is already running in this directory (its pid file
   names a live process), instead of unlocking under it;
2. ends orphaned evaluation and final-round jobs (local processes whose working
   directory is the campaign's, or Slurm jobs submitted from it): they are rerun; an
   orphaned LLM step (plan, generate) is left to finish, since its answer lands in the
   response cache, and the resumed job takes it from there (an identical request in
   flight is waited for, not sent again);
3. unlocks and runs Snakemake with the local default profile or ``--workflow-profile
   slurm``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .artifacts import REPO_DIR, write_text_atomic

#: Steps whose orphans are ended (they use the cores or a Slurm node; hand-over waits on
#: the Slurm pilot, which the resumed run replaces along with the pilot); the others are
#: LLM steps whose answer is adopted by the resumed run.
CPU_STEPS = ("evaluate-attempt", "final-round", "evaluate", "hand-over", "pilot")
PID_FILE = Path("results") / ".hpcagents" / "run.json"


@dataclass(frozen=True)
class Orphan:
    pid: int
    step: str
    cmdline: str


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_campaign(workdir: Path) -> dict | None:
    """The live campaign recorded in ``workdir`` (None when there is none)."""
    path = workdir / PID_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if info.get("host") != socket.gethostname() or not _alive(int(info.get("pid", 0))):
        return None
    return info


def local_orphans(workdir: Path, exclude: set[int]) -> list[Orphan]:
    """``hpcagents`` step processes whose working directory is the campaign's."""
    workdir = workdir.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != workdir:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if "hpcagents" not in args or "-m" not in args:
            continue
        rest = args[args.index("hpcagents") + 1 :]
        step = rest[0] if rest else ""
        found.append(Orphan(int(entry.name), step, " ".join(args)[:200]))
    return found


def slurm_orphans(workdir: Path) -> list[str]:
    """Slurm job ids of this user's jobs submitted from the campaign directory."""
    try:
        out = subprocess.run(
            ["squeue", "--me", "-h", "-o", "%i %Z"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    workdir = workdir.resolve()
    return [
        line.split()[0]
        for line in out.splitlines()
        if len(line.split()) == 2 and Path(line.split()[1]).resolve() == workdir
    ]


def end_orphans(workdir: Path, slurm: bool, poll_s: float = 0.2) -> list[str]:
    """End or adopt what a killed run left behind; return one line per action.

    Orphaned LLM steps are waited for: their answers land in the response cache, where
    the resumed run finds them, so a request in flight when the run was killed is never
    sent (nor paid) twice.
    """
    notes = []
    me = {os.getpid(), os.getppid()}
    waiting = []
    for orphan in local_orphans(workdir, me):
        if orphan.step in CPU_STEPS:
            try:
                os.killpg(os.getpgid(orphan.pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(orphan.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
            notes.append(f"ended orphaned {orphan.step} (pid {orphan.pid}); it will be rerun")
        else:
            waiting.append(orphan)
    if waiting:
        steps = ", ".join(f"{o.step} (pid {o.pid})" for o in waiting)
        print(
            f"[run] waiting for {len(waiting)} orphaned LLM step(s) of the killed run to "
            f"finish, so that their answers are adopted, not asked again: {steps}",
            flush=True,
        )
        while any(_alive(o.pid) for o in waiting):
            time.sleep(poll_s)
        notes.append(f"adopted the answers of {len(waiting)} orphaned LLM step(s): {steps}")
    if slurm:
        jobs = slurm_orphans(workdir)
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, check=False)
            notes.append(f"cancelled orphaned Slurm job(s) {' '.join(jobs)}; they will be rerun")
    return notes


def snakemake_base(workdir: Path, configfile: Path | None = None) -> list[str]:
    """Snakemake on this workflow, for the campaign in ``workdir`` (the project's Python)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO_DIR / "Snakefile"),
        "--directory",
        str(workdir),
    ]
    return cmd + (["--configfile", str(configfile)] if configfile else [])


def snakemake_command(args: argparse.Namespace, *extra: str) -> list[str]:
    """The Snakemake command of this campaign (plus ``extra`` before the user's args)."""
    cmd = snakemake_base(Path.cwd())
    if args.slurm:
        cmd += ["--workflow-profile", str(REPO_DIR / "profiles" / "slurm")]
    if args.configfile:
        cmd += ["--configfile", str(Path(args.configfile).resolve())]
    return cmd + list(extra) + list(args.snakemake_args)


def run_campaign(args: argparse.Namespace) -> int:
    workdir = Path.cwd()
    live = running_campaign(workdir)
    if live:
        print(
            f"hpcagents run: a campaign is already running in {workdir} (pid {live['pid']}, "
            f"started {live.get('started')}); `hpcagents status` shows where it is. Stop it "
            "first (or wait), then run this again to resume.",
            file=sys.stderr,
        )
        return 2
    for note in end_orphans(workdir, args.slurm):
        print(f"[run] {note}", flush=True)
    launched = _start_launched_servers(args)  # [slurm helper] llm.servers[].launch
    if launched == 2:
        return 2
    base = snakemake_command(args)
    # Safe: no campaign runs here (checked above), so the lock is a killed run's leftover.
    subprocess.run(snakemake_command(args, "--unlock"), capture_output=True, check=False)
    write_text_atomic(
        workdir / PID_FILE,
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "executor": "slurm" if args.slurm else "local",
                "command": base,
            }
        ),
    )
    try:
        print(f"[run] {' '.join(base)}", flush=True)
        return subprocess.call(base)
    finally:
        (workdir / PID_FILE).unlink(missing_ok=True)
        if launched:
            from .launch import stop_servers

            for note in stop_servers(launched, keep_all=args.keep_servers):
                print(f"[run] {note}", flush=True)


def _start_launched_servers(args: argparse.Namespace) -> dict | int | None:
    """[slurm helper] Start (or reuse) the servers the config says how to launch, as
    Slurm jobs, and hand Snakemake the config with their addresses filled in
    (results/.hpcagents/launched/config.yaml). Returns the resolved config (None when
    nothing is launched, 2 on an error already printed)."""
    import yaml

    from .config import ConfigError
    from .launch import STATE_DIR, launches, start_servers

    path = Path(args.configfile) if args.configfile else Path("config/config.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None  # Snakemake reports a missing or broken config itself
    if not isinstance(raw, dict) or not launches(raw):
        return None
    try:
        for started in start_servers(raw):
            how = "reused" if started.reused else "started"
            print(
                f"[run] {how} llm server '{started.name}' as Slurm job {started.job_id} "
                f"at {started.base_url}",
                flush=True,
            )
    except ConfigError as exc:
        print(f"hpcagents run: error: {exc}", file=sys.stderr)
        return 2
    resolved = STATE_DIR / "config.yaml"
    write_text_atomic(resolved, yaml.safe_dump(raw, sort_keys=False))
    args.configfile = str(resolved)
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slurm", action="store_true", help="use --workflow-profile slurm")
    parser.add_argument("--configfile", help="campaign config (default: config/config.yaml)")
    parser.add_argument(
        "--keep-servers",
        action="store_true",
        help="leave launched LLM servers (llm.servers[].launch) running at the end",
    )
    parser.add_argument("snakemake_args", nargs="*", help="extra snakemake arguments (after --)")
