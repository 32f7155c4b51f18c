"""Hardware counters of the candidate's timed calls, read from the trusted side.

Why: GFLOP/s says how fast, not why. Instructions per cycle and last-level cache misses
per call tell a model whether its kernel is starved by memory or by its own instruction
stream, which is the next decision it has to make.

How: ``perf_event_open`` (Linux) on every thread of the candidate's runner process tree,
opened by the judge (never by the candidate, which cannot see or reset them), user-space
only, disabled until the timed loop starts and read when it ends; the figures are per
call (warmup + timed calls, all on the bench size). Threads created after the counters
are opened are not counted (the runner's OpenMP pool exists after validation); the
record says how many threads were counted.

Where the node does not allow it, the record says so plainly and why: no PMU visible (a
VM without PMU pass-through), ``kernel.perf_event_paranoid`` too high for this user,
the syscall unavailable (seccomp on the judge, an old kernel). Never an error of the
evaluation.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: x86-64 and aarch64 syscall numbers of perf_event_open.
_SYSCALL = {"x86_64": 298, "aarch64": 241}
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
#: The hardware events counted: name -> (type, config).
HARDWARE_EVENTS = {
    "cycles": (PERF_TYPE_HARDWARE, 0),
    "instructions": (PERF_TYPE_HARDWARE, 1),
    "cache_references": (PERF_TYPE_HARDWARE, 2),
    "cache_misses": (PERF_TYPE_HARDWARE, 3),
}
#: Software events (no PMU needed): what the tests use to pin the mechanism anywhere.
SOFTWARE_EVENTS = {
    "task_clock_ns": (PERF_TYPE_SOFTWARE, 1),
    "context_switches": (PERF_TYPE_SOFTWARE, 3),
}
_IOC_ENABLE, _IOC_DISABLE, _IOC_RESET = 0x2400, 0x2401, 0x2403
_READ_FORMAT = 1 | 2  # TOTAL_TIME_ENABLED | TOTAL_TIME_RUNNING: multiplexing is visible
_FLAG_CLOEXEC = 8
# attr.flags bits: disabled(0) inherit(1) pinned(2) exclusive(3) exclude_user(4)
# exclude_kernel(5) exclude_hv(6)
_FLAGS = (1 << 0) | (1 << 5) | (1 << 6)


class _Attr(ctypes.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER5 (112 bytes)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("reserved", ctypes.c_uint16),
    ]


def _paranoid() -> int | None:
    try:
        return int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except (OSError, ValueError):
        return None


def pmu_visible() -> bool:
    """Whether the kernel exposes a CPU PMU (absent in most VMs without pass-through)."""
    base = Path("/sys/bus/event_source/devices")
    return any((base / name).exists() for name in ("cpu", "cpu_core", "cpu_atom", "armv8_pmuv3_0"))


def _why(err: int, kind: int) -> str:
    """A plain sentence for a perf_event_open failure."""
    paranoid = _paranoid()
    if err in (errno.EACCES, errno.EPERM):
        return (
            f"not allowed: kernel.perf_event_paranoid = {paranoid} forbids counting another "
            "process for this user (needs <= 2 and ptrace access, or CAP_PERFMON); ask the "
            "admin, or run as a user who may"
        )
    if err in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENODEV) and kind == PERF_TYPE_HARDWARE:
        where = "" if pmu_visible() else " (no CPU PMU in /sys/bus/event_source/devices)"
        return f"no hardware counters on this node{where}: a VM without PMU pass-through?"
    if err == errno.ENOSYS:
        return "perf_event_open is not available here (kernel or seccomp)"
    if err == errno.ESRCH:
        return "the candidate's process was gone before its counters could be opened"
    return f"perf_event_open failed: {os.strerror(err)}"


def _open(tid: int, kind: int, config: int) -> int:
    """One counter on thread ``tid`` (any CPU); returns the fd, or -errno."""
    machine = platform.machine()
    if machine not in _SYSCALL:
        return -errno.ENOSYS
    attr = _Attr()
    attr.type, attr.size, attr.config = kind, ctypes.sizeof(_Attr), config
    attr.read_format, attr.flags = _READ_FORMAT, _FLAGS
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(
        _SYSCALL[machine],
        ctypes.byref(attr),
        ctypes.c_int(tid),
        ctypes.c_int(-1),
        ctypes.c_int(-1),
        ctypes.c_ulong(_FLAG_CLOEXEC),
    )
    return int(fd) if fd >= 0 else -ctypes.get_errno()


def threads_of(pid: int) -> list[int]:
    """Every thread of ``pid`` and of the processes below it (bubblewrap's and the
    runner's), from /proc."""
    tids, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                tids.append(int(task.name))
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except (OSError, ValueError):
                pass
    return sorted(set(tids))


@dataclass
class Counters:
    """Counters on every thread of one process tree; ``start``/``stop`` around the timed
    loop, then :meth:`record`. Errors are kept as ``reason``, never raised."""

    pid: int
    events: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(HARDWARE_EVENTS))
    fds: dict[str, list[int]] = field(default_factory=dict)
    reason: str = ""
    threads: int = 0

    def open(self) -> Counters:
        tids = threads_of(self.pid)
        self.threads = len(tids)
        if not tids:
            self.reason = _why(errno.ESRCH, PERF_TYPE_HARDWARE)
            return self
        for name, (kind, config) in self.events.items():
            for tid in tids:
                fd = _open(tid, kind, config)
                if fd < 0:
                    if -fd == errno.ESRCH:
                        continue  # a thread that ended meanwhile
                    self.close()
                    self.reason = _why(-fd, kind)
                    return self
                self.fds.setdefault(name, []).append(fd)
        return self

    @property
    def ok(self) -> bool:
        return not self.reason and bool(self.fds)

    def _ioctl(self, request: int) -> None:
        for fds in self.fds.values():
            for fd in fds:
                fcntl.ioctl(fd, request, 0)

    def start(self) -> None:
        if self.ok:
            self._ioctl(_IOC_RESET)
            self._ioctl(_IOC_ENABLE)

    def stop(self) -> None:
        if self.ok:
            self._ioctl(_IOC_DISABLE)

    def read(self) -> dict[str, dict[str, float]]:
        """Per event: summed count, and the fraction of time it was really counting
        (below 1 when the PMU multiplexed more events than it has counters; the count is
        then scaled, as ``perf stat`` does)."""
        out = {}
        for name, fds in self.fds.items():
            total, enabled, running = 0.0, 0, 0
            for fd in fds:
                value, ena, run = struct.unpack("QQQ", os.read(fd, 24))
                total += value * (ena / run) if run else 0.0
                enabled, running = enabled + ena, running + run
            out[name] = {"count": total, "running": running / enabled if enabled else 0.0}
        return out

    def close(self) -> None:
        for fds in self.fds.values():
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds = {}

    def record(self, calls: int) -> dict[str, Any]:
        """The ``timing.counters`` record: per-call figures and ratios, or why none."""
        base: dict[str, Any] = {
            "available": False,
            "reason": self.reason,
            "perf_event_paranoid": _paranoid(),
            "threads_counted": self.threads,
            "calls": calls,
        }
        if not self.ok:
            base["reason"] = self.reason or "no counter could be opened"
            return base
        try:
            values = self.read()
        except OSError as exc:
            base["reason"] = f"reading the counters failed: {exc}"
            return base
        per_call = {name: round(v["count"] / max(1, calls)) for name, v in values.items()}
        base.update(available=True, reason="", per_call=per_call)
        base["multiplexed"] = any(v["running"] < 0.999 for v in values.values())
        if per_call.get("cycles") and "instructions" in per_call:
            base["ipc"] = round(per_call["instructions"] / per_call["cycles"], 3)
        if per_call.get("cache_references") and "cache_misses" in per_call:
            base["cache_miss_ratio"] = round(
                per_call["cache_misses"] / per_call["cache_references"], 4
            )
        return base


def counters_text(rec: dict[str, Any] | None) -> str:
    """One or two lines for a prompt."""
    if not rec:
        return "hardware counters: not measured"
    if not rec.get("available"):
        return f"hardware counters: not available on the timing node: {rec.get('reason')}"
    pc = rec["per_call"]
    parts = []
    if "cycles" in pc:
        parts.append(f"{pc['cycles']:.3g} cycles")
    if "instructions" in pc:
        parts.append(f"{pc['instructions']:.3g} instructions")
    if "ipc" in rec:
        parts.append(f"IPC {rec['ipc']:.2f} (summed over {rec['threads_counted']} threads)")
    if "cache_misses" in pc:
        miss = f"{pc['cache_misses']:.3g} last-level cache misses"
        if "cache_miss_ratio" in rec:
            miss += f" ({100 * rec['cache_miss_ratio']:.1f}% of cache references)"
        parts.append(miss)
    text = "hardware counters per call (user space, all threads): " + ", ".join(parts)
    if rec.get("multiplexed"):
        text += " [counters multiplexed: scaled estimates]"
    return text
