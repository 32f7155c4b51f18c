"""A kill leaves nothing running: CPU steps die with the campaign that started them.

Why: after ``kill -9`` of Snakemake, its evaluation jobs went on running (the shell that
wraps each job waits on it, so nothing tells the step its campaign is gone), held the
host's timing lock, and ``status`` called them "cut" while they ran.

Two layers:

* :func:`tie_to_campaign`, called first by the CPU steps (evaluate-attempt,
  final-round): a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)``, handled by
  ending every descendant, then the step) ties the step to the shell that runs it, and a
  watcher thread holds a pidfd of the campaign's
  Snakemake process; when that process dies, however it dies, the watcher kills every
  descendant of the step (compilers, sandboxes, the candidate and reference runners,
  frozen or not) and then the step itself. Sandboxes started by bubblewrap die with
  their parent anyway (``--die-with-parent``).
* :func:`campaign_processes`, used at the next start (``hpcagents run``/``demo``) and
  by ``status``: what of a campaign still runs, found by the working directory (the
  steps run in the campaign's directory, their sandboxes under its results/).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcagents.core.layout import RESULTS

PR_SET_PDEATHSIG = 1


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid`` (None: gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[19])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def snakemake_ancestor(pid: int | None = None) -> int | None:
    """The nearest ancestor of ``pid`` (default: this process) that is a Snakemake."""
    st = _stat(pid or os.getpid())
    while st is not None and st[0] > 1:
        parent = st[0]
        if any("snakemake" in part for part in _cmdline(parent)[:3]):
            return parent
        st = _stat(parent)
    return None


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root``, children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(root: int, include_root: bool = True) -> list[int]:
    """SIGKILL every descendant of ``root`` (and ``root``); return the pids signalled."""
    killed = []
    for pid in [*descendants(root), *([root] if include_root else [])]:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return killed


def _set_pdeathsig(sig: int = signal.SIGKILL) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


def _wait_for_exit(pid: int, start: int) -> None:
    """Block until process ``pid`` (started at ``start``) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.poll()
            return
        finally:
            os.close(fd)
    while True:  # no pidfd: poll, minding pid reuse
        st = _stat(pid)
        if st is None or st[1] != start:
            return
        time.sleep(0.5)


def tie_to_campaign() -> int | None:
    """Die, with every process this step started, when the campaign's Snakemake dies.

    Returns the Snakemake pid watched (None when the step runs outside one, e.g. by
    hand or in a Slurm pilot, where nothing is tied)."""
    me = os.getpid()

    def end(signum: int, frame: object) -> None:
        kill_tree(me, include_root=False)
        os._exit(128 + signum)

    # The shell that runs the step dies (a kill of the whole tree): SIGTERM, whose
    # handler ends what the step started (runners in sessions of their own) first.
    signal.signal(signal.SIGTERM, end)
    _set_pdeathsig(signal.SIGTERM)
    target = snakemake_ancestor()
    if target is None:
        return None
    st = _stat(target)
    if st is None:  # already gone
        kill_tree(me)
        return target

    def watch() -> None:
        _wait_for_exit(target, st[1])
        kill_tree(me, include_root=False)
        os.kill(me, signal.SIGKILL)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    return target


@dataclass(frozen=True)
class CampaignProcess:
    pid: int
    step: str  # the hpcagents step, "sandbox" for what runs under results/, or "snakemake"
    out: str | None  # the step's --out (the artifact it makes), when it has one
    cmdline: str


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _under_slurm(pid: int) -> bool:
    """Whether a Slurm job step runs ``pid`` (an ancestor is slurmstepd): a launched LLM
    server or a pilot's step is Slurm's to stop (scancel), never an orphan of ours."""
    seen = 0
    while pid > 1 and seen < 64:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm == "slurmstepd":
            return True
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        seen += 1
    return False


def hpcagents_step(argv: list[str]) -> str | None:
    """The package step a command line runs (``python -m hpcagents <step> ...``): the
    token after ``hpcagents``, "" when there is none; None when it is no such command."""
    if "hpcagents" not in argv or "-m" not in argv:
        return None
    rest = argv[argv.index("hpcagents") + 1 :]
    return rest[0] if rest else ""


def stop_child(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """Ask a child of ours to stop (SIGTERM: it may end its own work cleanly); after
    ``grace_s`` kill it and whatever it started, so nothing of it runs on as an orphan.
    The tree is killed only while the child is still unreaped: its pid cannot have been
    reused, and its children are still found under it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
        return
    except subprocess.TimeoutExpired:
        pass
    kill_tree(proc.pid)
    proc.wait()


def campaign_processes(workdir: Path, exclude: set[int] | None = None) -> list[CampaignProcess]:
    """What of the campaign in ``workdir`` runs now: its hpcagents steps (working
    directory the campaign's), Snakemake, and anything whose working directory lies under
    its results/ (the sandboxes and runners of an evaluation). Processes of Slurm jobs
    (launched LLM servers, the pilots' steps) are not listed: Slurm owns them."""
    workdir = Path(workdir).resolve()
    results = workdir / RESULTS
    exclude = exclude or set()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        pid = int(entry.name)
        cwd = _cwd(pid)
        if cwd is None:
            continue
        args = _cmdline(pid)
        if not args or _under_slurm(pid):
            continue
        text = " ".join(args)[:300]
        step = hpcagents_step(args)
        if cwd == workdir and step is not None:
            rest = args[args.index("hpcagents") + 1 :]
            out = rest[rest.index("--out") + 1] if "--out" in rest[:-1] else None
            found.append(CampaignProcess(pid, step, out, text))
        elif cwd == workdir and any("snakemake" in a for a in args[:3]):
            found.append(CampaignProcess(pid, "snakemake", None, text))
        elif cwd.is_relative_to(results):
            found.append(CampaignProcess(pid, "sandbox", None, text))
    return found


def snakemake_processes(workdir: Path) -> list[int]:
    """Pids of Snakemake processes running in ``workdir`` (its main process chdirs there)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with snakemake
        return []
    target = workdir.resolve()
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if not any("snakemake" in part for part in cmd[:3]):
                continue
            if Path(proc.cwd()).resolve() == target:
                pids.append(proc.info["pid"])
        except (psutil.Error, OSError):
            continue
    return sorted(pids)
