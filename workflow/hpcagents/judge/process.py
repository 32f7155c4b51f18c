"""The runner process: the sandboxed process that calls the kernel on command, timed and
frozen from the judge's side (its CPU time read from /proc, every thread stopped between
calls, its system calls filtered); the reference's runner and one candidate call.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpcagents.judge.arena import (
    HEADER_BYTES,
    Arena,
    Frame,
    Layout,
    fill_candidate,
    fill_reference,
    read_outputs,
)
from hpcagents.judge.blas import BlasInfo
from hpcagents.judge.errors import JudgeError, RunnerFault
from hpcagents.judge.sandbox import Limits, start_untrusted
from hpcagents.spec.kernelspec import KernelSpec


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds of a whole process (every thread, exited ones included), from the
    kernel's per-process CPU clock (nanoseconds); /proc/<pid>/stat ticks as a fallback."""
    clock = ((~pid) << 3) | 2  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    try:
        return time.clock_gettime(clock)
    except OSError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant, parents first, read from each thread's
    ``/proc/<pid>/task/<tid>/children`` (no scan of all of /proc, unlike
    :func:`hpcagents.core.lifeline.descendants`: cheap enough to poll every few ms)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


def _task_states(pid: int) -> list[str]:
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # a thread that just exited
        states.append(text[text.rindex(")") + 2])
    return states


_SYSCALL_NAMES: dict[int, str] = {}


def syscall_name(number: int) -> str:
    """The x86-64 name of a system call number, from the kernel headers gcc compiles with."""
    if not _SYSCALL_NAMES:
        for header in (
            "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
            "/usr/include/asm/unistd_64.h",
        ):
            try:
                text = Path(header).read_text()
            except OSError:
                continue
            for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", text):
                _SYSCALL_NAMES[int(m.group(2))] = m.group(1)
            break
    return _SYSCALL_NAMES.get(number, f"number {number}")


ALLOWED_SYSCALLS_TEXT = (
    "a kernel may only compute in memory: allocate (malloc, mmap without MAP_FIXED), use "
    "OpenMP or threads of its own process, wait on futexes, read clocks, query sysconf and "
    "the CPU affinity, and return; files, processes, signals to others, and remapping or "
    "unprotecting the judge's arguments are not allowed"
)


class Runner:
    """One runner process (candidate or reference) and its arena; times every call.

    Nothing the process says is believed: every call is timed from this side; the whole
    process (every thread) is frozen with SIGSTOP the moment its answer arrives, and stays
    frozen whenever no call of the judge's is running (while the reference or a rival is
    timed, while outputs are read and checked). An early or forged answer therefore only
    stops the kernel's work, which the output check then sees; an answer that does not
    carry the call's nonce, or bytes nobody asked for on the channel, fail the candidate.
    """

    def __init__(
        self,
        exe: Path,
        workdir: Path,
        fr: Frame,
        env: dict[str, str],
        limits: Limits,
        ro_dirs: list[Path],
        use_bwrap: bool,
        label: str,
    ) -> None:
        self.frame = fr
        self.arena = Arena(fr.size, label)
        self.workdir = workdir
        self.stderr_path = workdir / f"{label}.stderr"
        self.exe = str(exe)
        self.proc, self.sandbox = start_untrusted(
            [self.exe, str(self.arena.path), str(fr.size), str(fr.readonly)],
            workdir,
            env,
            limits,
            ro_dirs=ro_dirs,
            rw_dirs=[self.arena.dir],
            use_bwrap=use_bwrap,
            stderr_path=self.stderr_path,
        )
        self.calls = 0
        self.call_cpu_s: list[float] = []  # CPU time of the whole process in each call
        self.frozen_cpu_s = 0.0  # CPU time used while frozen: must stay 0
        self.freeze_s = 0.0  # the longest time a freeze took to take hold
        self._buf = b""
        self._cpu_frozen_at = 0.0
        self.pid: int | None = None
        self.layout: Layout | None = None  # the call in progress, to name a faulting address
        try:
            line = self._read_line(time.monotonic() + 120)
        except RunnerFault as exc:
            raise JudgeError(f"the runner did not start: {exc.reason}") from None
        if line != b"r":
            raise JudgeError(f"the runner did not start: {line[:120]!r}")
        self.pid = self._find_pid(time.monotonic() + 10)
        self._freeze()

    # -- process control --
    def _find_pid(self, deadline: float) -> int:
        """The runner's own pid (bubblewrap starts it two processes down)."""
        if self.sandbox["kind"] != "bubblewrap":
            return self.proc.pid
        while time.monotonic() < deadline:
            for pid in process_tree(self.proc.pid):
                try:
                    argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
                except OSError:
                    continue
                if argv0.decode(errors="replace") == self.exe:
                    return pid
            time.sleep(0.001)
        raise JudgeError("the runner's process was not found under the sandbox")

    def cpu(self) -> float:
        return process_cpu_seconds(self.pid) if self.pid else 0.0

    def _freeze(self) -> None:
        """SIGSTOP the whole process and wait until every thread has stopped."""
        t0 = time.monotonic()
        try:
            os.kill(self.pid, signal.SIGSTOP)
        except ProcessLookupError:
            raise self._died() from None
        spins = 0
        while any(st not in "TtZX" for st in _task_states(self.pid)):
            if self.proc.poll() is not None:
                raise self._died()
            if time.monotonic() - t0 > 5.0:
                raise JudgeError("the kernel's process could not be frozen within 5 s")
            spins += 1
            if spins > 50:
                time.sleep(0.0005)
        self.freeze_s = max(self.freeze_s, time.monotonic() - t0)
        self._cpu_frozen_at = self.cpu()

    def _thaw(self) -> None:
        used = self.cpu() - self._cpu_frozen_at
        if used > 0:
            self.frozen_cpu_s += used
        try:
            os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            raise self._died() from None

    def _read_line(self, deadline: float) -> bytes:
        fd_out = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunnerFault("timeout", "timeout")
            ready, _, _ = select.select([fd_out], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd_out, 256)
            if not chunk:
                raise self._died()
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _unasked(self) -> bytes:
        """Bytes on the channel that no command asked for (the process is frozen now)."""
        fd_out = self.proc.stdout.fileno()
        while select.select([fd_out], [], [], 0)[0]:
            chunk = os.read(fd_out, 4096)
            if not chunk:
                break
            self._buf += chunk
        extra, self._buf = self._buf, b""
        return extra

    def call(self, deadline: float) -> float:
        """One kernel call; returns its wall time in seconds, measured from this side. The
        process is frozen again when this returns (or raises)."""
        extra = self._unasked()
        if extra:
            raise RunnerFault(
                "tampering",
                f"the kernel's process wrote {len(extra)} byte(s) to the judge's command "
                f"channel ({extra[:40]!r}): a kernel computes its outputs and returns, it "
                "never writes to stdout",
            )
        nonce = os.urandom(8).hex().encode()
        self._thaw()
        cpu0 = self.cpu()
        t0 = time.perf_counter()
        try:
            os.write(self.proc.stdin.fileno(), b"c " + nonce + b"\n")
        except OSError:
            raise self._died() from None
        try:
            line = self._read_line(deadline)
        finally:
            t1 = time.perf_counter()
            if self.proc.poll() is None:
                self._freeze()
        self.call_cpu_s.append(max(0.0, self._cpu_frozen_at - cpu0))
        if line != b"d " + nonce:
            raise RunnerFault(
                "tampering",
                f"the kernel's process answered {line[:40]!r} instead of the runner's answer "
                "to this call: a kernel never writes to the judge's command channel",
            )
        self.calls += 1
        return t1 - t0

    def _array_at(self, offset: int) -> str:
        """What lies at ``offset`` of the arena in the call that faulted."""
        if offset < HEADER_BYTES:
            return "the header (the call's arguments)"
        lay = self.layout
        if lay is not None:
            for name, a in lay.arrays.items():
                if a.offset <= offset < a.offset + a.nbytes:
                    kind = "its input" if a.param.intent == "in" else "its output"
                    return f"{kind} {name} (element {(offset - a.offset) // a.dtype.itemsize})"
            before = [(a.offset, n) for n, a in lay.arrays.items() if a.offset <= offset]
            if before:
                return f"the fenced bytes past the end of {max(before)[1]}"
        return "the fenced bytes between the arguments"

    def _died(self) -> RunnerFault:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        try:
            tail = self.stderr_path.read_bytes()[-400:].decode(errors="replace").strip()
        except OSError:
            tail = ""
        if rc is not None and rc > 128 and self.sandbox["kind"] == "bubblewrap":
            rc = 128 - rc  # bwrap reports a child killed by signal N as exit code 128 + N
        m = re.search(r"hpca-seccomp: (arena )?(\d+)", tail)
        if rc == 97 and m:
            name = syscall_name(int(m.group(2)))
            if m.group(1):
                return RunnerFault(
                    "forbidden_syscall",
                    f"the kernel called {name} on the judge's arguments (remapping, "
                    "unprotecting or unmapping them, or mapping at a fixed address): its "
                    "inputs are read-only and stay where the judge put them",
                )
            return RunnerFault(
                "forbidden_syscall",
                f"the kernel made the system call {name}, which is not allowed: "
                + ALLOWED_SYSCALLS_TEXT,
            )
        m = re.search(r"hpca-fault: (SIGSEGV|SIGBUS) (arena\+(\d+)|outside)", tail)
        if rc == 96 and m:
            if m.group(3) is not None:
                offset = int(m.group(3))
                where = self._array_at(offset)
                if offset < self.frame.readonly:
                    return RunnerFault(
                        "crash",
                        f"the kernel wrote to {where}, which is read-only (signal {m.group(1)} "
                        "at the first write, during the call): inputs must not be modified, "
                        "not even as scratch space restored afterwards",
                    )
                return RunnerFault(
                    "crash", f"the kernel crashed with signal {m.group(1)} inside {where}"
                )
            return RunnerFault(
                "crash", f"the kernel crashed with signal {m.group(1)} (a bad address)"
            )
        if rc is not None and rc < 0:
            sig = -rc
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            if str(name) == "SIGSYS":
                return RunnerFault(
                    "forbidden_syscall",
                    "the kernel made a system call that is not allowed (SIGSYS): "
                    + ALLOWED_SYSCALLS_TEXT,
                )
            hint = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}.get(
                str(name), ""
            )
            return RunnerFault("crash", f"the kernel crashed with signal {name}{hint}")
        if "error while loading shared libraries" in tail:
            raise JudgeError(f"the runner could not be loaded: {tail}")
        more = f"; output: {tail}" if tail else ""
        return RunnerFault("crash", f"the kernel's process exited with code {rc}{more}")

    def close(self) -> None:
        try:
            if self.pid and self.proc.poll() is None:
                os.kill(self.pid, signal.SIGKILL)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        self.arena.close()


def runner_env(threads: int, blas: BlasInfo | None, workdir: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C",
        **(blas.env if blas else {}),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_PROC_BIND": "close",
        "OMP_PLACES": "cores",
        "MALLOC_ARENA_MAX": "4",
        # glibc fills every fresh allocation with bytes 0x7f (N ^ 0xff): an uninitialised
        # double then reads as ~1e306, so kernels that use uninitialised memory fail.
        "MALLOC_PERTURB_": "128",
    }


@dataclass
class Reference:
    """The reference runner: clean inputs, then |inputs| for the error bound's magnitude."""

    kernel: KernelSpec
    runner: Runner

    def timed(self, lay: Layout, data: dict, deadline: float) -> tuple[float, dict]:
        """The reference on clean inputs, timed like the candidate: (seconds, outputs)."""
        fill_reference(self.runner.arena, self.kernel, lay, data, absolute=False)
        try:
            t = self.runner.call(deadline)
        except RunnerFault as exc:
            raise JudgeError(f"the reference failed: {exc.reason}") from None
        return t, read_outputs(self.runner.arena, lay)

    def magnitude(self, lay: Layout, data: dict, deadline: float) -> dict | None:
        """The reference on |inputs| (the error bound's magnitude); None for other models."""
        if self.kernel.tolerance.model != "error_bound":
            return None
        fill_reference(self.runner.arena, self.kernel, lay, data, absolute=True)
        try:
            self.runner.call(deadline)
        except RunnerFault as exc:
            raise JudgeError(f"the reference failed: {exc.reason}") from None
        return read_outputs(self.runner.arena, lay)

    def run(self, lay: Layout, data: dict, deadline: float):
        t, want = self.timed(lay, data, deadline)
        return t, want, self.magnitude(lay, data, deadline)


def candidate_call(
    kernel: KernelSpec, runner: Runner, lay: Layout, data: dict, deadline: float
) -> tuple[float, np.ndarray, np.ndarray, dict]:
    """Lay out the poisoned inputs and call; the process is frozen when the call returns,
    so the outputs read first, then the whole arena copied, are what the call left."""
    image = fill_candidate(runner.arena, kernel, lay, data)
    runner.layout = lay
    t = runner.call(deadline)
    got = read_outputs(runner.arena, lay)
    # the arena as the call left it: a view, not a copy. The process is frozen and this
    # arena is written again only by the next fill_candidate, so it stays as it is for
    # check_call; a caller that keeps it past the next call must copy it.
    after = runner.arena.bytes[: lay.size]
    return t, image, after, got


def check_frozen(runner: Runner) -> str | None:
    """Fail a candidate whose process used CPU while it was frozen (it cannot, unless the
    freeze failed): the last line behind the freeze, never clamped, never sampled."""
    if runner.frozen_cpu_s > 0.005:
        return (
            f"the kernel's process used {runner.frozen_cpu_s:.3f} s of CPU while the judge held "
            "it frozen between calls: no work may happen outside the timed call"
        )
    return None
