"""Run untrusted programs (the compiler on candidate code, the candidate's runner):
bubblewrap when it works, rlimits always, a wall-clock timeout.

Inside bubblewrap the candidate sees a read-only system (``/usr`` and the reference
library's directory), an empty ``/tmp``, no network (a new network namespace with only
``lo`` down), no other processes, and exactly one writable directory: its work dir.
Nothing else of the host — home, the results tree, the repository — is visible at all.

Where bubblewrap cannot run (no user namespaces on some clusters) the run falls back to
rlimits alone, and the evaluation record says so (``sandbox.kind = "rlimits"`` with the
reason): never silently.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits (rlimits apply to every thread and child of the run)."""

    cpu_s: int = 1200
    memory_mb: int = 4096  # RLIMIT_AS; 0 = none (the race check's runner bounds RSS instead)
    file_mb: int = 64
    nproc: int = 4096


@lru_cache(maxsize=1)
def bwrap_status() -> tuple[bool, str]:
    """Whether bubblewrap can create a sandbox here, and if not, why."""
    exe = shutil.which("bwrap")
    if not exe:
        return False, "bwrap not installed (apt-get install bubblewrap)"
    try:
        proc = subprocess.run(
            [exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap failed to start: {exc}"
    if proc.returncode != 0:
        return False, f"bwrap cannot create namespaces here: {proc.stderr.strip()[:200]}"
    return True, "bubblewrap"


def _system_binds() -> list[str]:
    args: list[str] = ["--ro-bind", "/usr", "/usr"]
    for top in ("/lib", "/lib64", "/bin", "/sbin", "/lib32", "/libx32"):
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    for extra in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/sys/devices/system/cpu"):
        if Path(extra).exists():
            args += ["--ro-bind", extra, extra]
    return args


def bwrap_command(
    cmd: list[str], workdir: Path, ro_dirs: list[Path], rw_dirs: list[Path] | None = None
) -> list[str]:
    """The bwrap command line: read-only system, private /tmp, ``workdir`` (+ ``rw_dirs``)
    writable, no network, no other process, nothing else of the host."""
    workdir = workdir.resolve()
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    args += _system_binds()
    # /tmp first: binds below it (a venv or work dir under /tmp) must be mounted after it
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for d in ro_dirs:
        real = Path(d).resolve()
        if real.exists() and not str(workdir).startswith(str(real) + "/"):
            args += ["--ro-bind", str(real), str(real)]
    for d in rw_dirs or []:
        real = Path(d).resolve()
        args += ["--bind", str(real), str(real)]
    args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    return args + ["--", *cmd]


def _apply_limits(limits: Limits) -> None:
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
    if limits.memory_mb > 0:  # 0: no address-space limit (ThreadSanitizer's shadow memory)
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@dataclass
class RunResult:
    returncode: int | None  # None: killed at the wall-clock timeout
    output: str
    sandbox: dict[str, Any]


def sandbox_info(workdir: Path, limits: Limits, timeout_s: float, use_bwrap: bool) -> dict:
    """What the record says about the confinement of a run (never silent about rlimits)."""
    ok, why = bwrap_status() if use_bwrap else (False, "bubblewrap disabled by the caller")
    return {
        "kind": "bubblewrap" if ok else "rlimits",
        "reason": "" if ok else why,
        "network": "none (new network namespace)" if ok else "host network (no sandbox)",
        "writable": [str(workdir.resolve())] if ok else ["whole file system (no sandbox)"],
        "limits": asdict(limits),
        "timeout_s": timeout_s,
    }


def start_untrusted(
    cmd: list[str],
    workdir: Path,
    env: dict[str, str],
    limits: Limits,
    ro_dirs: list[Path] | None = None,
    rw_dirs: list[Path] | None = None,
    use_bwrap: bool = True,
    stderr_path: Path | None = None,
) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start ``cmd`` confined like :func:`run_untrusted` and leave it running, its stdin and
    stdout as binary pipes (the judge's command channel); stderr goes to ``stderr_path``."""
    info = sandbox_info(workdir, limits, 0.0, use_bwrap)
    info.pop("timeout_s")
    full = (
        bwrap_command(cmd, workdir, ro_dirs or [], rw_dirs) if info["kind"] == "bubblewrap" else cmd
    )
    err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            full,
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
            bufsize=0,
            preexec_fn=lambda: _apply_limits(limits),  # noqa: PLW1509 - no threads here
        )
    finally:
        if stderr_path:
            err.close()
    return proc, info


def run_untrusted(
    cmd: list[str],
    workdir: Path,
    env: dict[str, str],
    timeout_s: float,
    limits: Limits | None = None,
    ro_dirs: list[Path] | None = None,
    stdin_text: str = "",
    use_bwrap: bool = True,
) -> RunResult:
    """Run ``cmd`` confined to ``workdir``; kill its whole process group at the timeout."""
    limits = limits or Limits()
    info = sandbox_info(workdir, limits, timeout_s, use_bwrap)
    ok = info["kind"] == "bubblewrap"
    full = bwrap_command(cmd, workdir, ro_dirs or []) if ok else cmd
    proc = subprocess.Popen(
        full,
        cwd=workdir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        errors="replace",
        preexec_fn=lambda: _apply_limits(limits),  # noqa: PLW1509 - no threads in the parent here
    )
    try:
        out, _ = proc.communicate(stdin_text, timeout=timeout_s)
        return RunResult(proc.returncode, out, info)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return RunResult(None, out or "", info)
