"""Pilot job: ONE exclusive Slurm job runs a campaign's evaluations one after another.

Why not one Slurm job (or one Snakemake group job) per evaluation: on a cluster the cost
of a submission is not the evaluation but the round trip around it. Measured on the
one-node test Slurm (tests/bench/slurm_overhead.py): about 13 s per attempt with one job
per evaluation, and still 4-5 s between members of a Snakemake group job (Snakemake
starts inside the job and one ``srun`` step per member) plus the executor plugin's
growing poll interval between submissions. A pilot pays the submission once: it holds an
exclusive node and runs whatever evaluation is handed to it as soon as it is handed,
strictly one at a time, so two timings never share the node.

The hand-over goes through files in the campaign directory (shared between the login
node and the compute nodes, like every other artifact), under ``results/.hpcagents/pilot``:

``queue/<rid>.json``     a request: the step's argv and working directory (client writes)
``claimed/<rid>@<job>.json``  the same file, renamed by the pilot that runs it (atomic)
``done/<rid>.json``      exit code and where it ran (pilot writes, atomically)
``logs/<rid>.log``       the step's output; the client copies it into the rule's log
``alive/<rid>``          touched by the waiting client; a request whose client died
                         (no touch for STALE_S) is dropped, never run for nobody
``pilot.json``           the current pilot's job id; removed by a pilot that stops
``lock``                 flock: one client at a time decides whether to submit a pilot

Each evaluation still writes its own record with its own Slurm provenance (the step runs
inside the pilot's allocation, so it sees the pilot's SLURM_JOB_ID and ``scontrol`` says
whether the node is exclusive). A pilot that dies is replaced; the request it was running
is retried ALONE, in a pilot of its own, so an evaluation that kills its node cannot take
the queue down with it a second time; a second death is reported as the step's error. A
pilot that Slurm can never start (it asks for more than any node of the partition has) is
an error naming the resource, never a silent wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import write_text_atomic

PILOT_DIR = Path("results") / ".hpcagents" / "pilot"
#: A waiting client touches its alive file this often; a queued request whose file is
#: older than STALE_S belongs to a dead client and is dropped.
HEARTBEAT_S = 5.0
STALE_S = 60.0
#: Slurm states in which a job can still run (or is running) our requests.
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING"}
#: Pending reasons that mean "never, as submitted": the request exceeds what the partition
#: or its nodes can give, so waiting would be silent and endless.
NEVER_REASONS = {
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxNodePerJobLimit",
    "QOSMaxWallDurationPerJobLimit",
}


class PilotError(RuntimeError):
    """The pilot cannot be had (submission refused, never schedulable, died twice)."""


@dataclass(frozen=True)
class PilotResources:
    """What the pilot asks Slurm for: one node's worth, taken from the rule's resources in
    the Slurm profile (the same keys the executor plugin reads)."""

    partition: str | None = None
    account: str | None = None
    cpus_per_task: int | None = None
    mem_mb: int | None = None
    #: the pilot's own time limit (minutes); it stops taking requests when less than
    #: eval_runtime_min is left, and a fresh pilot takes over
    runtime_min: int = 240
    #: the most one evaluation may take (minutes; the profile's ``runtime``)
    eval_runtime_min: int = 30
    idle_s: float = 120.0
    extra: tuple[str, ...] = field(default_factory=tuple)

    def sbatch_args(self) -> list[str]:
        args = ["--nodes=1", "--ntasks=1", f"--time={self.runtime_min}"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.account:
            args.append(f"--account={self.account}")
        if self.cpus_per_task:
            args.append(f"--cpus-per-task={self.cpus_per_task}")
        if self.mem_mb:
            args.append(f"--mem={self.mem_mb}")
        return args + list(self.extra)


def parse_extra(text: str | None) -> tuple[str, ...]:
    """The profile's ``slurm_extra`` ("'--exclusive'", quoted for the plugin's shell)."""
    if not text:
        return ()
    words = shlex.split(text)
    return tuple(w2 for w in words for w2 in shlex.split(w))


@dataclass
class Paths:
    root: Path

    def __post_init__(self) -> None:
        for sub in ("queue", "claimed", "done", "logs", "alive"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def pilot_file(self) -> Path:
        return self.root / "pilot.json"

    def queued(self, rid: str) -> Path:
        return self.root / "queue" / f"{rid}.json"

    def claimed(self, rid: str) -> list[Path]:
        return sorted((self.root / "claimed").glob(f"{rid}@*.json"))

    def done(self, rid: str) -> Path:
        return self.root / "done" / f"{rid}.json"

    def log(self, rid: str) -> Path:
        return self.root / "logs" / f"{rid}.log"

    def alive(self, rid: str) -> Path:
        return self.root / "alive" / rid


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    with open(paths.root / "lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def job_state(job_id: str) -> tuple[str | None, str | None]:
    """(state, pending reason) of a job; (None, None) when Slurm no longer knows it."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T %r"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN", None  # cannot tell: treat as alive, ask again later
    if not out:
        return None, None
    return out[0], (out[1] if len(out) > 1 else None)


def is_live(job_id: str) -> bool:
    state, _ = job_state(job_id)
    return state in LIVE_STATES or state == "UNKNOWN"


def _never_message(job_id: str, reason: str, res: PilotResources) -> str:
    """Name what the pilot asked for and what the partition's nodes have."""
    asked = " ".join(res.sbatch_args())
    have = ""
    try:
        cmd = ["sinfo", "-h", "-o", "%P %c %m %l"]
        if res.partition:
            cmd += ["-p", res.partition]
        rows = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.split("\n")
        have = "; ".join(
            f"partition {r.split()[0]}: nodes with {r.split()[1]} CPUs, {r.split()[2]} MB, "
            f"time limit {r.split()[3]}"
            for r in rows
            if len(r.split()) == 4
        )
    except (OSError, subprocess.TimeoutExpired):
        pass
    return (
        f"the evaluation pilot job {job_id} can never start: Slurm says Reason={reason} for "
        f"`sbatch {asked}` ({have or 'no node information'}). Lower cpus_per_task / mem_mb / "
        "pilot_runtime or change slurm_partition under set-resources in profiles/slurm/"
        "config.yaml so that one node can hold it."
    )


def submit(paths: Paths, res: PilotResources, only: str | None = None) -> str:
    """sbatch one pilot; return its job id (a refused submission is a PilotError)."""
    cmd = [
        sys.executable,
        "-m",
        "hpcagents",
        "pilot",
        "--dir",
        str(paths.root.resolve()),
        "--runtime-min",
        str(res.runtime_min),
        "--reserve-min",
        str(res.eval_runtime_min),
        "--idle-s",
        str(res.idle_s),
    ]
    if only:
        cmd += ["--only", only]
    env = dict(os.environ)
    pkg = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = pkg + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    sbatch = [
        "sbatch",
        "--parsable",
        f"--job-name=hpcagents-pilot{'-alone' if only else ''}",
        f"--chdir={Path.cwd()}",
        f"--output={paths.root.resolve()}/slurm-%j.out",
        *res.sbatch_args(),
        "--wrap",
        "exec " + shlex.join(cmd),
    ]
    proc = subprocess.run(sbatch, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise PilotError(
            f"sbatch refused the evaluation pilot ({' '.join(res.sbatch_args())}): "
            f"{proc.stderr.strip()}. Change the evaluate resources under set-resources in "
            "profiles/slurm/config.yaml (cpus_per_task, mem_mb, slurm_partition, runtime)."
        )
    return proc.stdout.strip().split(";")[0]


def ensure_pilot(paths: Paths, res: PilotResources) -> str:
    """The live pilot's job id, submitting one if there is none (call under the lock)."""
    info = _read(paths.pilot_file)
    if info and is_live(str(info["job_id"])):
        return str(info["job_id"])
    job = submit(paths, res)
    write_text_atomic(
        paths.pilot_file,
        json.dumps({"job_id": job, "submitted": time.time(), "host": socket.gethostname()}),
    )
    return job


def _check_schedulable(job_id: str, res: PilotResources) -> None:
    state, reason = job_state(job_id)
    if state == "PENDING" and reason in NEVER_REASONS:
        subprocess.run(["scancel", job_id], capture_output=True, check=False)
        raise PilotError(_never_message(job_id, reason, res))


def hand_over(
    paths: Paths, argv: list[str], res: PilotResources, poll_s: float = 0.2, check_s: float = 5.0
) -> int:
    """Client side: queue ``argv`` for the pilot, wait for it, relay its output; its exit
    code is ours. Runs on the node where Snakemake runs (a local rule)."""
    rid = uuid.uuid4().hex
    alive = paths.alive(rid)
    alive.touch()
    request = {"argv": argv, "cwd": str(Path.cwd()), "created": time.time(), "alone": False}
    write_text_atomic(paths.queued(rid), json.dumps(request))
    dead_pilots: list[str] = []
    last_beat = last_check = time.monotonic()
    try:
        with locked(paths):
            pilot = ensure_pilot(paths, res)
        while True:
            done = _read(paths.done(rid))
            if done is not None:
                return _finish(paths, rid, done)
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_S:
                alive.touch()
                last_beat = now
            if now - last_check >= check_s:
                last_check = now
                pilot = _watch(paths, rid, request, res, pilot, dead_pilots)
            time.sleep(poll_s)
    finally:
        alive.unlink(missing_ok=True)
        paths.queued(rid).unlink(missing_ok=True)  # on an error: nobody waits for it now


def _watch(
    paths: Paths,
    rid: str,
    request: dict,
    res: PilotResources,
    pilot: str,
    dead_pilots: list[str],
) -> str:
    """One health check of the request's pilot; returns the pilot now in charge."""
    claims = paths.claimed(rid)
    if claims:
        job = claims[0].stem.split("@", 1)[1]
        if is_live(job) or _read(paths.done(rid)) is not None:
            return job
        # The pilot died while running this request: retry it alone, once.
        dead_pilots.append(job)
        if len(dead_pilots) >= 2:
            for c in claims:
                c.unlink(missing_ok=True)
            raise PilotError(
                f"the evaluation killed its pilot job twice (Slurm jobs {', '.join(dead_pilots)}"
                f"); see {paths.root}/slurm-<job>.out and `scontrol show job` for why"
            )
        request = dict(request, alone=True, retry_of=job)
        write_text_atomic(paths.queued(rid), json.dumps(request))
        for c in claims:
            c.unlink(missing_ok=True)
        print(
            f"[pilot] pilot job {job} died while running this request; retrying it alone",
            file=sys.stderr,
            flush=True,
        )
        return submit(paths, res, only=rid)
    queued = _read(paths.queued(rid))
    if queued is not None and queued.get("alone"):
        if not is_live(pilot):
            dead_pilots.append(pilot)
            if len(dead_pilots) >= 2:
                raise PilotError(f"the pilot jobs of this request died: {dead_pilots}")
            return submit(paths, res, only=rid)
        _check_schedulable(pilot, res)
        return pilot
    info = _read(paths.pilot_file)
    if info:
        job = str(info["job_id"])
        state, reason = job_state(job)
        if state == "PENDING" and reason in NEVER_REASONS:
            subprocess.run(["scancel", job], capture_output=True, check=False)
            raise PilotError(_never_message(job, reason, res))
        if state in LIVE_STATES or state == "UNKNOWN":
            return job
    with locked(paths):
        return ensure_pilot(paths, res)


def _finish(paths: Paths, rid: str, done: dict) -> int:
    log = paths.log(rid)
    with contextlib.suppress(OSError):
        sys.stdout.write(log.read_text())
    print(
        f"[pilot] ran in Slurm job {done.get('job_id')} on {done.get('host')} "
        f"({done.get('wall_s')} s, exit {done.get('rc')})",
        flush=True,
    )
    for path in (log, paths.done(rid)):
        path.unlink(missing_ok=True)
    return int(done.get("rc", 1))


# --------------------------------------------------------------------------- the pilot


def _next_request(paths: Paths, only: str | None) -> Path | None:
    """The oldest runnable request; requests of dead clients are dropped on the way."""
    now = time.time()
    queue = []
    for path in (paths.root / "queue").glob("*.json"):
        rid = path.stem
        if only and rid != only:
            continue
        try:
            beat = paths.alive(rid).stat().st_mtime
        except FileNotFoundError:
            beat = 0.0
        if now - beat > STALE_S:
            path.unlink(missing_ok=True)  # its client is gone: nobody waits for it
            continue
        req = _read(path)
        if req is None or (req.get("alone") and rid != only):
            continue
        queue.append((req.get("created", 0.0), path))
    return min(queue)[1] if queue else None


def _alone_waiting(paths: Paths) -> bool:
    for path in (paths.root / "queue").glob("*.json"):
        req = _read(path)
        if req and req.get("alone"):
            return True
    return False


def _run_one(paths: Paths, path: Path, job: str) -> None:
    rid = path.stem
    claim = paths.root / "claimed" / f"{rid}@{job}.json"
    try:
        os.rename(path, claim)  # atomic: two pilots never run the same request
    except FileNotFoundError:
        return
    req = _read(claim) or {}
    started = time.time()
    with open(paths.log(rid), "w") as log:
        try:
            rc = subprocess.call(
                req["argv"], cwd=req.get("cwd"), stdout=log, stderr=subprocess.STDOUT
            )
        except (OSError, KeyError) as exc:
            log.write(f"pilot: cannot run the request: {exc}\n")
            rc = 127
    record = {
        "rc": rc,
        "job_id": job,
        "host": socket.gethostname(),
        "started": started,
        "wall_s": round(time.time() - started, 3),
    }
    write_text_atomic(paths.done(rid), json.dumps(record))
    claim.unlink(missing_ok=True)
    print(f"{time.strftime('%H:%M:%S')} {rid} rc={rc} {record['wall_s']} s", flush=True)


def serve(
    root: Path,
    runtime_min: float,
    reserve_min: float,
    idle_s: float,
    only: str | None = None,
    poll_s: float = 0.1,
) -> int:
    """The pilot's loop, inside its Slurm allocation."""
    paths = Paths(root)
    job = os.environ.get("SLURM_JOB_ID", f"local-{os.getpid()}")
    start = time.monotonic()
    stop_taking = start + max(0.0, (runtime_min - reserve_min) * 60)
    idle_since = time.monotonic()
    print(f"pilot {job} on {socket.gethostname()}: serving {root}", flush=True)
    while True:
        if time.monotonic() < stop_taking:
            nxt = _next_request(paths, only)
            if nxt is not None:
                _run_one(paths, nxt, job)
                idle_since = time.monotonic()
                if only:
                    return 0
                continue
        if only and not paths.queued(only).exists():
            return 0
        # An idle pilot yields its node to a request that must be retried alone: on a
        # small (or busy) partition that request's own pilot may be waiting for this node.
        yielding = not only and _alone_waiting(paths)
        if yielding or time.monotonic() - idle_since >= idle_s or time.monotonic() >= stop_taking:
            with locked(paths):
                if time.monotonic() < stop_taking and _next_request(paths, only):
                    continue
                info = _read(paths.pilot_file)
                if info and str(info.get("job_id")) == job:
                    paths.pilot_file.unlink(missing_ok=True)
            why = "yielding to a request retried alone" if yielding else "idle or out of time"
            print(f"pilot {job}: stopping ({why})", flush=True)
            return 0
        time.sleep(poll_s)


def stop(root: Path) -> str | None:
    """End the campaign's pilot (after the campaign): scancel the job pilot.json names."""
    if not (root / "pilot.json").exists():
        return None
    paths = Paths(root)
    with locked(paths):
        info = _read(paths.pilot_file)
        if not info:
            return None
        job = str(info["job_id"])
        subprocess.run(["scancel", job], capture_output=True, check=False)
        paths.pilot_file.unlink(missing_ok=True)
    return job
