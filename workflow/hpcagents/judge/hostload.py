"""How busy the host was while a figure was taken, and the doubt that puts on it.

Why: a timing taken while other work runs on the cores can be off by any amount, and a
figure without its doubt reads as fact (a report showed 1,464.8% "of mkl"). Every timing
records what the host looked like around it: the 1-minute load average, the CPU steal
(a VM's cores taken by the hypervisor, from /proc/stat), the other runnable tasks seen
(``procs_running`` sampled between timed calls, when neither the candidate nor the
reference runs, so what is seen is someone else's work), and the spread between repeats.
:func:`doubt` turns that into words: "host busy: 3.1 runnable tasks per core; figures
may be off by up to N%".

Linux only (reads /proc); where /proc cannot be read the record says so (``None``s),
and no figure is flagged on what was not seen.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

#: Other runnable tasks per usable core above which the host counts as busy (more
#: tasks than cores: the timed call shared its cores).
BUSY_PER_CORE = 1.0
#: CPU steal (% of the cores' time, over the timing) above which the host counts as busy.
BUSY_STEAL_PCT = 5.0
#: A spread between repeats (slowest / fastest) above this is flagged as noisy.
SPREAD_LIMIT = 1.10
#: % of a vendor BLAS (MKL, OpenBLAS) above which a figure is implausible, not a win.
PLAUSIBLE_PCT_OF_VENDOR = 150.0
VENDOR_BLAS = ("mkl", "openblas")


def _cpu_times() -> tuple[int, int] | None:
    """(total jiffies, steal jiffies) of the whole host (None: unreadable)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    steal = values[7] if len(values) > 7 else 0
    # guest time is already counted in user/nice
    return sum(values[:8]), steal


def runnable_now() -> int | None:
    """Tasks in the run queue of the whole host right now, this reader included."""
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _running_threads(pid: int) -> int:
    count = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        if raw[raw.rindex(")") + 2 :].startswith("R"):
            count += 1
    return count


def own_running(root: int) -> int:
    """Runnable threads of ``root`` and all its descendants (at least 1: the caller)."""
    from hpcagents.core.lifeline import descendants

    return max(1, sum(_running_threads(p) for p in [root, *descendants(root)]))


def _loadavg() -> float | None:
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class LoadWatch:
    """Watch the host over one timing: :meth:`sample` between timed calls (nothing of
    the judge's own runs then), :meth:`record` at the end."""

    cores: int = field(default_factory=usable_cores)
    samples: list[int] = field(default_factory=list)
    _start_cpu: tuple[int, int] | None = None
    _start_load: float | None = None
    _started: float = 0.0

    def __post_init__(self) -> None:
        self._start_cpu = _cpu_times()
        self._start_load = _loadavg()
        self._started = time.monotonic()

    def sample(self) -> None:
        """One look at the run queue, less the runnable threads of our own process tree
        (this judge, the candidate's and the reference's runners, OpenMP workers still
        spinning after a call): what is left is someone else's work."""
        n = runnable_now()
        if n is not None:
            self.samples.append(max(0, n - own_running(os.getpid())))

    def record(self, spread: float | None = None) -> dict[str, Any]:
        """The host_load record of this timing (see evaluation.schema.json)."""
        end_cpu = _cpu_times()
        steal = None
        if self._start_cpu and end_cpu and end_cpu[0] > self._start_cpu[0]:
            steal = 100.0 * (end_cpu[1] - self._start_cpu[1]) / (end_cpu[0] - self._start_cpu[0])
        others = sorted(self.samples)
        median = others[len(others) // 2] if others else None
        rec: dict[str, Any] = {
            "cores": self.cores,
            "loadavg_1m_start": self._start_load,
            "loadavg_1m_end": _loadavg(),
            "steal_pct": None if steal is None else round(steal, 2),
            "runnable_others": others,
            "runnable_others_median": median,
            "runnable_per_core": None if median is None else round(median / self.cores, 2),
            "spread": None if spread is None else round(spread, 4),
            "seconds": round(time.monotonic() - self._started, 3),
        }
        rec.update(judge_load(rec))
        return rec


def judge_load(rec: dict[str, Any]) -> dict[str, Any]:
    """``busy``, ``noisy`` and the ``doubt`` sentence of a host_load record."""
    per_core = rec.get("runnable_per_core")
    steal = rec.get("steal_pct")
    spread = rec.get("spread")
    busy_reasons = []
    if isinstance(per_core, int | float) and per_core > BUSY_PER_CORE:
        busy_reasons.append(f"{per_core:.1f} runnable tasks per core")
    if isinstance(steal, int | float) and steal > BUSY_STEAL_PCT:
        busy_reasons.append(f"{steal:.0f}% CPU steal")
    noisy = isinstance(spread, int | float) and spread > SPREAD_LIMIT
    return {
        "busy": bool(busy_reasons),
        "noisy": noisy,
        "doubt": doubt_words(
            busy_reasons,
            spread if noisy or busy_reasons else None,
            per_core if busy_reasons else None,
        ),
    }


def off_by_pct(spread: float | None, per_core: float | None) -> float | None:
    """How far a figure may be off: the spread seen between repeats, or, when the other
    runnable tasks could each have taken a share of a core, the slowdown a fair share
    gives (1 + tasks per core), whichever is larger."""
    bounds = []
    if isinstance(spread, int | float) and spread > 0:
        bounds.append(100.0 * (spread - 1.0))
    if isinstance(per_core, int | float) and per_core > 0:
        bounds.append(100.0 * per_core)
    return max(bounds) if bounds else None


def doubt_words(reasons: list[str], spread: float | None, per_core: float | None) -> str:
    """'' when nothing is in doubt, else one sentence a person reads."""
    parts = []
    if reasons:
        parts.append("host busy: " + ", ".join(reasons))
    if isinstance(spread, int | float) and spread > SPREAD_LIMIT:
        parts.append(f"spread x{spread:.2f} between repeats")
    if not parts:
        return ""
    off = off_by_pct(spread, per_core)
    tail = f"; figures may be off by up to {off:.0f}%" if off is not None else ""
    return "; ".join(parts) + tail


def doubt_of(host_load: dict[str, Any] | None) -> str:
    """The doubt sentence of a recorded host_load ('' when none or nothing to say)."""
    if not isinstance(host_load, dict):
        return ""
    return str(host_load.get("doubt") or "")


def implausible(pct: float | None, reference_library: str | None) -> str:
    """A warning when a % of a vendor BLAS is beyond belief ('' otherwise): a kernel
    150% faster than MKL at its own routine is far likelier a measuring fault (the
    reference starved of cores, a busy host) than a win."""
    lib = (reference_library or "").lower()
    if not isinstance(pct, int | float) or lib not in VENDOR_BLAS:
        return ""
    if pct <= PLAUSIBLE_PCT_OF_VENDOR:
        return ""
    return (
        f"{pct:.1f}% of {reference_name(lib)} is implausible (above "
        f"{PLAUSIBLE_PCT_OF_VENDOR:.0f}% of a vendor BLAS): check the host's load and the "
        "reference's threads before believing it"
    )


def reference_name(name: str | None) -> str:
    """The reference as people name it: MKL, OpenBLAS, or the user's file as is."""
    if not name:
        return "the reference"
    return {"mkl": "MKL", "openblas": "OpenBLAS"}.get(str(name).lower(), str(name))


def widest_spread(runs: list[list[float]]) -> float | None:
    """The largest slowest/fastest ratio among several contenders' runs (None: none)."""
    spreads = [max(r) / min(r) for r in runs if r and min(r) > 0]
    return max(spreads) if spreads else None
