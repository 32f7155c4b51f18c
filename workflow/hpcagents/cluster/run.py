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
from typing import IO

from hpcagents.core.artifacts import REPO_DIR, write_text_atomic
from hpcagents.core.layout import RESULTS, CampaignLayout

#: Steps whose orphans are ended (they use the cores or a Slurm node; hand-over waits on
#: the Slurm pilot, which the resumed run replaces along with the pilot); the others are
#: LLM steps whose answer is adopted by the resumed run.
CPU_STEPS = ("evaluate-attempt", "final-round", "evaluate", "hand-over", "pilot", "sandbox")
#: Steps that ask an LLM: waited for, so their answers land in the cache and are adopted.
LLM_STEPS = ("plan", "generate", "repair")
PID_FILE = CampaignLayout().run_record()


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
    """The live campaign recorded in ``workdir`` (None when there is none), or a
    Snakemake still running there without its ``hpcagents run`` (killed alone): a new
    start must never unlock under it."""
    path = workdir / PID_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        info = {}
    if info.get("host") == socket.gethostname() and _alive(int(info.get("pid", 0))):
        return info
    from hpcagents.core.lifeline import campaign_processes

    smk = [p.pid for p in campaign_processes(workdir) if p.step == "snakemake"]
    if smk:
        return {"pid": smk[0], "started": "unknown (a Snakemake without hpcagents run)"}
    return None


def local_orphans(workdir: Path, exclude: set[int]) -> list[Orphan]:
    """What a killed run of the campaign in ``workdir`` left running: its ``hpcagents``
    steps (working directory the campaign's) and the sandboxes and runners of its
    evaluations (working directory under its results/)."""
    from hpcagents.core.lifeline import campaign_processes

    return [
        Orphan(p.pid, p.step, p.cmdline[:200])
        for p in campaign_processes(workdir, exclude)
        if p.step != "snakemake"
    ]


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
            from hpcagents.core.lifeline import kill_tree

            try:
                group = os.getpgid(orphan.pid)
                if group != os.getpgrp():  # never our own group
                    os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            kill_tree(orphan.pid)  # and whatever it started in sessions of their own
            notes.append(
                f"ended orphaned {orphan.step} (pid {orphan.pid}: {orphan.cmdline[:120]}); "
                "it will be rerun"
            )
        elif orphan.step in LLM_STEPS:
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


def snakemake_command(
    workdir: Path,
    configfile: Path | str | None = None,
    *,
    slurm: bool = False,
    cores: str | None = None,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """THE Snakemake command line of a campaign in ``workdir``: the project's Python and
    Snakefile, the Slurm workflow profile when asked, the config file, then ``extra``.
    ``hpcagents run``, the demo and the campaigns of the study and the suite all start
    Snakemake with it."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO_DIR / "Snakefile"),
        "--directory",
        str(workdir),
    ]
    if slurm:
        cmd += ["--workflow-profile", str(REPO_DIR / "profiles" / "slurm")]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    if cores:
        cmd += ["--cores", str(cores)]
    return cmd + list(extra)


def unlock(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Drop the lock a killed run of ``cmd`` left behind. Only safe when no Snakemake runs
    in its directory: every caller has checked that first."""
    subprocess.run([*cmd, "--unlock"], capture_output=True, check=False, env=env)


def _command_of(args: argparse.Namespace) -> list[str]:
    """``hpcagents run``'s Snakemake command (the user's Snakemake arguments last)."""
    configfile = Path(args.configfile).resolve() if args.configfile else None
    return snakemake_command(
        campaign_dir(args), configfile, slurm=args.slurm, extra=args.snakemake_args
    )


def campaign_dir(args: argparse.Namespace) -> Path:
    """Where the campaign lives: ``--dir`` (relative to where the user stands) or here."""
    return Path(getattr(args, "dir", None) or ".").resolve()


def precheck_config(path: Path) -> str | None:
    """The config's first problem as one line (file:line for YAML), before Snakemake
    parses it and reports it its own way; None when it loads."""
    from hpcagents.spec.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as exc:
        return str(exc)
    return None


#: How long a Snakemake told to stop may take to end its running jobs before it and
#: everything it started are killed.
STOP_GRACE_S = 60.0


def call_snakemake(
    cmd: list[str],
    env: dict[str, str],
    log: IO[bytes] | IO[str] | None = None,
    grace_s: float = STOP_GRACE_S,
) -> int:
    """Run the campaign's Snakemake and return its exit code; if this command is stopped
    meanwhile (SIGTERM made SystemExit by ``exit_on_sigterm``, a Ctrl-C), Snakemake is
    told to stop too (SIGTERM: it ends its running jobs and marks them incomplete, so a
    rerun redoes them), and after ``grace_s`` it and all it started are killed.

    Why not ``subprocess.call``: on an exception it SIGKILLs Snakemake alone, whose
    running evaluations then carry on as orphans, timing and loading the machine under
    whatever runs next (a killed suite's evaluations once ran through a benchmark).
    """
    from hpcagents.core.lifeline import stop_child

    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT if log is not None else None
    )
    try:
        return proc.wait()
    except BaseException:
        stop_child(proc, grace_s)
        raise


def run_recorded(workdir: Path, cmd: list[str], env: dict[str, str], executor: str) -> int:
    """Run ``cmd`` (the campaign's Snakemake) with its pid recorded in the campaign, so
    ``hpcagents status`` and the next start know whether a campaign runs here."""
    write_text_atomic(
        workdir / PID_FILE,
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "executor": executor,
                "command": cmd,
            }
        ),
    )
    try:
        return call_snakemake(cmd, env)
    finally:
        (workdir / PID_FILE).unlink(missing_ok=True)


def run_campaign(args: argparse.Namespace) -> int:
    from hpcagents.spec.frozen import ACCEPT_ENV

    workdir = campaign_dir(args)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.configfile:
        args.configfile = str(Path(args.configfile).expanduser().resolve())
    config_path = Path(args.configfile) if args.configfile else workdir / "config/config.yaml"
    if not config_path.is_file() and not args.configfile:
        print(
            f"hpcagents run: error: no config/config.yaml in {workdir}: give one with "
            f"--configfile FILE (the documented one is {REPO_DIR / 'config/config.yaml'})",
            file=sys.stderr,
        )
        return 2
    problem = precheck_config(config_path)
    if problem and "launch block" not in problem:  # launched servers get their url below
        print(f"hpcagents run: error: {problem}", file=sys.stderr)
        return 2
    from hpcagents.spec.frozen import precheck

    stale = precheck(config_path, workdir / RESULTS, args.accept_changes)
    if stale:
        print(f"hpcagents run: {stale}", file=sys.stderr)
        return 2
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
    base = _command_of(args)
    env = dict(os.environ)
    if args.accept_changes:
        env[ACCEPT_ENV] = "1"
    # Safe: no campaign runs here (checked above), so the lock is a killed run's leftover.
    unlock(base, env)
    try:
        print(f"[run] {' '.join(base)}", flush=True)
        return run_recorded(workdir, base, env, "slurm" if args.slurm else "local")
    finally:
        if launched:
            from hpcagents.cluster.launch import STATE_DIR, stop_servers

            state = workdir / STATE_DIR
            for note in stop_servers(launched, keep_all=args.keep_servers, state_dir=state):
                print(f"[run] {note}", flush=True)


def _start_launched_servers(args: argparse.Namespace) -> dict | int | None:
    """[slurm helper] Start (or reuse) the servers the config says how to launch, as
    Slurm jobs, and hand Snakemake the config with their addresses filled in
    (results/.hpcagents/launched/config.yaml). Returns the resolved config (None when
    nothing is launched, 2 on an error already printed)."""
    import yaml

    from hpcagents.cluster.launch import STATE_DIR, launches, start_servers
    from hpcagents.spec.config import ConfigError

    workdir = campaign_dir(args)
    path = Path(args.configfile) if args.configfile else workdir / "config/config.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None  # Snakemake reports a missing or broken config itself
    if not isinstance(raw, dict) or not launches(raw):
        return None
    try:
        for started in start_servers(raw, workdir / STATE_DIR):
            how = "reused" if started.reused else "started"
            print(
                f"[run] {how} llm server '{started.name}' as Slurm job {started.job_id} "
                f"at {started.base_url}",
                flush=True,
            )
    except ConfigError as exc:
        print(f"hpcagents run: error: {exc}", file=sys.stderr)
        return 2
    resolved = workdir / STATE_DIR / "config.yaml"
    write_text_atomic(resolved, yaml.safe_dump(raw, sort_keys=False))
    args.configfile = str(resolved)
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slurm", action="store_true", help="use --workflow-profile slurm")
    parser.add_argument("--configfile", help="campaign config (default: <dir>/config/config.yaml)")
    parser.add_argument(
        "--dir",
        help="the campaign's folder, where results/ goes (default: the current directory)",
    )
    parser.add_argument(
        "--accept-changes",
        action="store_true",
        help="accept settings that change figures (bench size, repeats, flags, reference, "
        "kernel spec) on existing results: record the change and make those figures again",
    )
    parser.add_argument(
        "--keep-servers",
        action="store_true",
        help="leave launched LLM servers (llm.servers[].launch) running at the end",
    )
    parser.add_argument("snakemake_args", nargs="*", help="extra snakemake arguments (after --)")
