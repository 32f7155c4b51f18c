"""When and where a workflow step ran: the raw material of the campaign's own timeline.

Every step is its own process (a Snakemake job), so the process's creation time is when
the job started, as closely as the step itself can know it; the step stamps its artifact
with that and the time it finished. ``summary`` then measures, per iteration, the wall
time, the critical path through the DAG, and how many LLM requests were in flight, from
the artifacts of the campaign itself rather than from a separate benchmark.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

_IMPORTED_AT = time.time()


def process_started_at() -> float:
    """Unix time at which this process was created (the job's start), to ~10 ms.

    Computed as now minus the process's age (``/proc/uptime`` minus its start tick), not
    from the boot time in whole seconds that ``psutil.create_time`` builds on: that one is
    off by up to a second, which would swamp steps that take a second.
    """
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(0.0, age)
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT


def step_record() -> dict[str, Any]:
    """``{"started_at", "ended_at", "host", "slurm_job_id"}`` for the artifact being written."""
    return {
        "started_at": round(process_started_at(), 4),
        "ended_at": round(time.time(), 4),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
