"""Pilot pool: up to ``max_nodes`` exclusive Slurm jobs run a campaign's timing steps.

Why pilots and not one Slurm job (or one Snakemake group job) per evaluation: on a
cluster the cost of a submission is not the evaluation but the round trip around it.
Measured on the test Slurm (tests/bench/slurm_overhead.py): about 13 s per attempt with
one job per evaluation, and still 4-5 s between members of a Snakemake group job plus the
executor plugin's growing poll interval between submissions. A pilot pays the submission
once: it holds one exclusive node and runs whatever timing step is handed to it as soon as
it is handed, strictly one at a time, so two timings never share a node.

Why a POOL of one-node pilots and not one K-node allocation with an ``srun --exclusive``
step per evaluation (tests/bench/cluster_scaling.py --mechanisms 16, 2-node test cluster:
16 no-op steps took 1.5 s through the pool, 1.4 s as steps of a 2-node allocation and
6.6 s as a job array; with another job holding one node for 30 s, 2.0 s, 33.0 s and
15.7 s): a K-node allocation starts only when K nodes are free at once (on a busy
cluster it waits for the last one while the others could already work), cannot grow
while work queues up nor give back one idle node (Slurm shrinks a running job only by
hand, and never grows it), and the whole allocation dies with any one of its nodes.
One-node pilots start one by one as nodes free up, leave one by one when idle, and a node
failure costs one pilot. Job arrays are still one job per evaluation (the submission
cost above), and Snakemake's grouping runs a group on one node.

The pool grows while timing work is queued: whenever the requests waiting or running
outnumber the pool's live pilots, a client submits one more, up to ``max_nodes``. It
shrinks by itself: a pilot with nothing to do for ``idle_s`` leaves its node.

The hand-over goes through files in the campaign directory (shared between the login
node and the compute nodes, like every other artifact), under ``results/.hpcagents/pilot``:

``queue/<rid>.json``     a request: the step's argv, working directory and pool (client)
``claimed/<rid>@<job>.json``  the same file, renamed by the pilot that runs it (atomic:
                         two pilots never run the same request)
``done/<rid>.json``      exit code, Slurm job, node and CPU model (pilot, atomically)
``logs/<rid>.log``       the step's output; the client copies it into the rule's log
``alive/<rid>``          touched by the waiting client; a request whose client died
                         (no touch for STALE_S) is dropped, never run for nobody
``pilots/<job>.json``    one per submitted pilot: its pool, and the request it was
                         submitted for if it is a retry alone; removed when it ends
``node_type.json``      the CPU model every timing of the campaign runs on (the first
                         pilot's) and the nodes refused for another CPU model
``squeue.json``          the pilots' Slurm states, refreshed at most every REFRESH_S by
                         whichever client looks first (one squeue for the whole pool,
                         never one per waiting evaluation)
``lock``                 flock around every decision above

A pool is the set of pilots submitted with the same Slurm request (partition, account,
constraint, CPUs, memory, extra options): requests of another pool never run on its
nodes. All timings of a campaign run on ONE CPU model: the first pilot pins its CPU
model; a later pilot that lands on a node with another one runs nothing, records the node
as refused (later submissions exclude it) and leaves, saying why in its Slurm output. So a
heterogeneous partition (or a resume with another partition) never mixes node types by
accident; ``python -m hpcagents.views.nodetypes`` lists the node of every figure.

Each evaluation writes its own record with its own Slurm provenance (the step runs
inside the pilot's allocation: SLURM_JOB_ID, SLURMD_NODENAME, ``scontrol`` says whether
the node is exclusive). A pilot that dies (cancelled, node failure) is replaced; the
request it was running is retried ALONE, in a pilot of its own, so an evaluation that
kills its node cannot take the pool down with it a second time; a second death is
reported as the step's error. A pilot whose node is set to DRAIN finishes the step it is
running and leaves; the pool replaces it elsewhere. Pilots are submitted ``--no-requeue``
(a requeued pilot would keep the job id of a dead one). A pilot that Slurm can never
start (it asks for more than any node of the partition has) is an error naming the
resource, never a silent wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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

from hpcagents.core.artifacts import write_text_atomic
from hpcagents.core.lifeline import hpcagents_step
from hpcagents.judge.machine import cpu_model

#: A waiting client touches its alive file this often; a queued request whose file is
#: older than STALE_S belongs to a dead client and is dropped.
HEARTBEAT_S = 5.0
STALE_S = 60.0
#: The pilots' Slurm states are asked for at most this often (all pilots in one squeue).
REFRESH_S = 3.0
#: An idle pilot looks at its node's state (DRAIN) this often (and before every step).
NODE_CHECK_S = 5.0
#: Slurm states in which a job can still run (or is running) our requests.
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "RESIZING", "UNKNOWN"}
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
    """What one pilot asks Slurm for: one node's worth, taken from the rule's resources in
    the Slurm profile (the same keys the executor plugin reads), and how many pilots the
    campaign may hold at once."""

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
    #: the most exclusive timing nodes (pilots) the campaign holds at once
    max_nodes: int = 1

    def sbatch_args(self, exclude: tuple[str, ...] = ()) -> list[str]:
        args = ["--nodes=1", "--ntasks=1", f"--time={self.runtime_min}", "--no-requeue"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.account:
            args.append(f"--account={self.account}")
        if self.cpus_per_task:
            args.append(f"--cpus-per-task={self.cpus_per_task}")
        if self.mem_mb:
            args.append(f"--mem={self.mem_mb}")
        if exclude:
            args.append(f"--exclude={','.join(sorted(exclude))}")
        return args + list(self.extra)

    @property
    def pool(self) -> str:
        """The pool's name: the Slurm request that decides which nodes it may get (the
        time limits and the pool size do not change the node type)."""
        key = [self.partition, self.account, self.cpus_per_task, self.mem_mb, *self.extra]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]


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
        for sub in ("queue", "claimed", "done", "logs", "alive", "pilots"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def pilot(self, job: str) -> Path:
        return self.root / "pilots" / f"{job}.json"

    @property
    def node_type(self) -> Path:
        return self.root / "node_type.json"

    @property
    def squeue_cache(self) -> Path:
        return self.root / "squeue.json"

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


def _squeue(jobs: list[str]) -> dict[str, tuple[str, str | None]] | None:
    """{job: (state, pending reason)} of the jobs Slurm still knows (one squeue call);
    None when squeue cannot be asked (then nothing is declared dead)."""
    if not jobs:
        return {}
    try:
        proc = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", ",".join(jobs), "-o", "%i %T %r"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        return None
    states: dict[str, tuple[str, str | None]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else None)
    return states


def pilot_states(paths: Paths, max_age_s: float = REFRESH_S) -> dict[str, dict]:
    """The campaign's pilots with their Slurm state (call under the lock). The squeue
    answer is shared through squeue.json for max_age_s; a pilot Slurm no longer runs
    leaves the list (its file is removed)."""
    pilots = {}
    for path in (paths.root / "pilots").glob("*.json"):
        info = _read(path)
        if info:
            pilots[str(info["job_id"])] = info
    cache = _read(paths.squeue_cache) or {}
    fresh = time.time() - float(cache.get("at", 0)) < max_age_s
    known = cache.get("states", {})
    if not fresh or any(job not in known for job in pilots):
        states = _squeue(sorted(pilots))
        if states is None:
            known = {job: ["UNKNOWN", None] for job in pilots}
        else:
            known = {job: list(states.get(job, (None, None))) for job in pilots}
            write_text_atomic(paths.squeue_cache, json.dumps({"at": time.time(), "states": known}))
    for job, info in list(pilots.items()):
        state, reason = known.get(job, ["UNKNOWN", None])
        if state not in LIVE_STATES:
            paths.pilot(job).unlink(missing_ok=True)
            del pilots[job]
            continue
        info["state"], info["reason"] = state, reason
    return pilots


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


def refused_nodes(paths: Paths) -> tuple[str, ...]:
    """Nodes whose CPU model is not the campaign's: no pilot is submitted to them."""
    info = _read(paths.node_type) or {}
    return tuple(sorted(info.get("refused", {})))


def submit(paths: Paths, res: PilotResources, only: str | None = None) -> str:
    """sbatch one pilot of res's pool; return its job id (a refused submission is a
    PilotError). Call under the lock: the pilot's file is written before it returns."""
    cmd = [
        sys.executable,
        "-m",
        "hpcagents",
        "pilot",
        "--dir",
        str(paths.root.resolve()),
        "--pool",
        res.pool,
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
    pkg = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    sbatch = [
        "sbatch",
        "--parsable",
        f"--job-name=hpcagents-pilot{'-alone' if only else ''}",
        f"--chdir={Path.cwd()}",
        f"--output={paths.root.resolve()}/slurm-%j.out",
        *res.sbatch_args(refused_nodes(paths)),
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
    job = proc.stdout.strip().split(";")[0]
    info = {"job_id": job, "pool": res.pool, "only": only, "submitted": time.time()}
    write_text_atomic(paths.pilot(job), json.dumps(info))
    return job


def _pool_requests(paths: Paths, pool: str) -> int:
    """Requests of the pool waiting or running (not those retried alone: each has its
    own pilot)."""
    count = 0
    for sub in ("queue", "claimed"):
        for path in (paths.root / sub).glob("*.json"):
            req = _read(path)
            if req and req.get("pool") == pool and not req.get("alone"):
                count += 1
    return count


def ensure_pool(paths: Paths, res: PilotResources) -> int:
    """Grow the pool to the work: while the pool's requests outnumber its live pilots,
    submit one more, up to max_nodes (pilots retried alone count against it). Returns how
    many shared pilots the pool has now. Call under the lock."""
    mine = [p for p in pilot_states(paths).values() if p.get("pool") == res.pool]
    alone = sum(1 for p in mine if p.get("only"))
    shared = len(mine) - alone
    want = min(res.max_nodes - alone, _pool_requests(paths, res.pool))
    while shared < want:
        submit(paths, res)
        shared += 1
    return shared


def _check_schedulable(paths: Paths, res: PilotResources) -> None:
    """A pilot of the pool that Slurm will never start is an error (and is cancelled)."""
    for job, info in pilot_states(paths).items():
        if info.get("pool") != res.pool:
            continue
        if info.get("state") == "PENDING" and info.get("reason") in NEVER_REASONS:
            subprocess.run(["scancel", job], capture_output=True, check=False)
            paths.pilot(job).unlink(missing_ok=True)
            raise PilotError(_never_message(job, str(info["reason"]), res))


def hand_over(
    paths: Paths, argv: list[str], res: PilotResources, poll_s: float = 0.2, check_s: float = 5.0
) -> int:
    """Client side: queue ``argv`` for the pool, wait for a pilot to run it, relay its
    output; its exit code is ours. Runs on the node where Snakemake runs (a local rule)."""
    rid = uuid.uuid4().hex
    alive = paths.alive(rid)
    alive.touch()
    request = {
        "argv": argv,
        "cwd": str(Path.cwd()),
        "created": time.time(),
        "alone": False,
        "pool": res.pool,
    }
    write_text_atomic(paths.queued(rid), json.dumps(request))
    dead_pilots: list[str] = []
    last_beat = last_check = time.monotonic()
    try:
        with locked(paths):
            ensure_pool(paths, res)
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
                _watch(paths, rid, request, res, dead_pilots)
            time.sleep(poll_s)
    finally:
        alive.unlink(missing_ok=True)
        paths.queued(rid).unlink(missing_ok=True)  # on an error: nobody waits for it now


def _watch(
    paths: Paths,
    rid: str,
    request: dict,
    res: PilotResources,
    dead_pilots: list[str],
) -> None:
    """One health check of the request: its pilot died → retry alone; the pool is
    smaller than the work → grow it; a pilot Slurm will never start → error."""
    with locked(paths):
        live = pilot_states(paths)
        claims = paths.claimed(rid)
        if claims:
            job = claims[0].stem.split("@", 1)[1]
            if job in live or _read(paths.done(rid)) is not None:
                return
            # The pilot died while running this request: retry it alone, once.
            dead_pilots.append(job)
            for c in claims:
                c.unlink(missing_ok=True)
            if len(dead_pilots) >= 2:
                raise PilotError(
                    "the evaluation's pilot job died twice while running it (Slurm jobs "
                    f"{', '.join(dead_pilots)}); see {paths.root}/slurm-<job>.out and "
                    "`scontrol show job` for why"
                )
            retry = dict(request, alone=True, retry_of=job)
            write_text_atomic(paths.queued(rid), json.dumps(retry))
            print(
                f"[pilot] pilot job {job} died while running this request; retrying it alone",
                file=sys.stderr,
                flush=True,
            )
            submit(paths, res, only=rid)
            return
        queued = _read(paths.queued(rid))
        if queued is not None and queued.get("alone"):
            own = [j for j, p in live.items() if p.get("only") == rid]
            if not own:
                dead_pilots.append("?")
                if len(dead_pilots) >= 2:
                    raise PilotError(f"the pilot jobs of this request died: {dead_pilots}")
                submit(paths, res, only=rid)
        else:
            ensure_pool(paths, res)
        _check_schedulable(paths, res)


def _finish(paths: Paths, rid: str, done: dict) -> int:
    log = paths.log(rid)
    with contextlib.suppress(OSError):
        sys.stdout.write(log.read_text())
    print(
        f"[pilot] ran in Slurm job {done.get('job_id')} on node {done.get('node')} "
        f"({done.get('cpu_model')}; {done.get('wall_s')} s, exit {done.get('rc')})",
        flush=True,
    )
    for path in (log, paths.done(rid)):
        path.unlink(missing_ok=True)
    return int(done.get("rc", 1))


# --------------------------------------------------------------------------- the pilot


def _next_request(paths: Paths, only: str | None, pool: str | None) -> Path | None:
    """The oldest runnable request of the pool; requests of dead clients are dropped."""
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
        if pool is not None and req.get("pool", pool) != pool:
            continue  # another node type's request
        queue.append((req.get("created", 0.0), path))
    return min(queue)[1] if queue else None


def _alone_waiting(paths: Paths) -> bool:
    for path in (paths.root / "queue").glob("*.json"):
        req = _read(path)
        if req and req.get("alone"):
            return True
    return False


def node_name() -> str:
    """The Slurm node this pilot holds (several slurmd may share one host)."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def node_draining(node: str) -> bool:
    """Whether Slurm asks this node to drain (finish what runs, take nothing new)."""
    if not os.environ.get("SLURM_JOB_ID"):
        return False
    try:
        out = subprocess.run(
            ["scontrol", "show", "node", "-o", node], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return "DRAIN" in fields.get("State", "")


def pin_node_type(paths: Paths, node: str, model: str) -> str | None:
    """Join the campaign's node type, or say why not: the first pilot pins its CPU model;
    a node with another model is recorded as refused (later pilots exclude it). Returns
    None when this node may time the campaign's steps, else the refusal."""
    with locked(paths):
        info = _read(paths.node_type) or {"refused": {}}
        if not info.get("cpu_model"):
            info.update(cpu_model=model, first_node=node, pinned_at=time.time())
            write_text_atomic(paths.node_type, json.dumps(info, indent=1))
            return None
        if info["cpu_model"] == model:
            return None
        info.setdefault("refused", {})[node] = model
        write_text_atomic(paths.node_type, json.dumps(info, indent=1))
        return (
            f"node {node} has CPU {model!r}, but this campaign's timings run on "
            f"{info['cpu_model']!r} (first seen on {info.get('first_node')}): figures of two "
            "CPU models are never compared; no pilot goes to this node again. Name one node "
            "type with slurm_partition or slurm_extra --constraint in profiles/slurm."
        )


def _run_one(paths: Paths, path: Path, job: str, node: str, model: str) -> None:
    rid = path.stem
    claim = paths.root / "claimed" / f"{rid}@{job}.json"
    try:
        os.rename(path, claim)  # atomic: two pilots never run the same request
    except FileNotFoundError:
        return
    req = _read(claim) or {}
    started = time.time()
    env = dict(os.environ)
    # One timing lock per Slurm node: on a cluster that is the host's; where several
    # slurmd share a host (the test cluster), each node's steps order their own timings.
    env.setdefault("HPCAGENTS_LOCK_DIR", f"/tmp/hpcagents-node-{node}")
    with open(paths.log(rid), "w") as log:
        try:
            rc = subprocess.call(
                req["argv"], cwd=req.get("cwd"), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        except (OSError, KeyError) as exc:
            log.write(f"pilot: cannot run the request: {exc}\n")
            rc = 127
    record = {
        "rc": rc,
        "job_id": job,
        "node": node,
        "host": socket.gethostname(),
        "cpu_model": model,
        "started": started,
        "wall_s": round(time.time() - started, 3),
    }
    write_text_atomic(paths.done(rid), json.dumps(record))
    # The pool's account of its busy time, one line per step run to its end (what
    # tests/bench/cluster_scaling.py and the node-failure test read): when the step was
    # queued, so idle nodes can be told apart from steps left waiting.
    busy = {
        "rid": rid,
        "job_id": job,
        "node": node,
        "step": _step_name(req.get("argv") or []),
        "queued": req.get("created"),
        "start": started,
        "end": time.time(),
    }
    with open(paths.root / "busy.jsonl", "a") as fh:
        fh.write(json.dumps(busy) + "\n")
    claim.unlink(missing_ok=True)
    print(f"{time.strftime('%H:%M:%S')} {rid} rc={rc} {record['wall_s']} s", flush=True)


def _step_name(argv: list[str]) -> str:
    """The package step a request runs, else its program's name."""
    step = hpcagents_step(argv)
    if step is not None:
        return step
    return Path(argv[0]).name if argv else ""


def _leave(paths: Paths, job: str, why: str) -> int:
    paths.pilot(job).unlink(missing_ok=True)
    print(f"pilot {job}: stopping ({why})", flush=True)
    return 0


def serve(
    root: Path,
    runtime_min: float,
    reserve_min: float,
    idle_s: float,
    only: str | None = None,
    poll_s: float = 0.1,
    pool: str | None = None,
) -> int:
    """The pilot's loop, inside its Slurm allocation: run the pool's requests one at a
    time until idle for idle_s, out of time, or the node is set to drain."""
    paths = Paths(root)
    job = os.environ.get("SLURM_JOB_ID", f"local-{os.getpid()}")
    node, model = node_name(), cpu_model()
    print(f"pilot {job} on node {node} ({model}): serving {root}", flush=True)
    if os.environ.get("SLURM_JOB_ID") or pool is not None:
        refusal = pin_node_type(paths, node, model)
        if refusal:
            print(f"pilot {job}: {refusal}", flush=True)
            with locked(paths):
                return _leave(paths, job, "another CPU model")
    start = time.monotonic()
    stop_taking = start + max(0.0, (runtime_min - reserve_min) * 60)
    idle_since = last_node_check = time.monotonic()
    while True:
        if time.monotonic() < stop_taking:
            nxt = _next_request(paths, only, pool)
            # Before every step: a node set to DRAIN takes nothing new (what it ran, it
            # finished; the pool replaces this pilot on another node).
            if nxt is not None and node_draining(node):
                with locked(paths):
                    return _leave(paths, job, f"node {node} is draining")
            if nxt is not None:
                _run_one(paths, nxt, job, node, model)
                idle_since = last_node_check = time.monotonic()
                if only:
                    return _leave(paths, job, "ran the request retried alone")
                continue
        if time.monotonic() - last_node_check >= NODE_CHECK_S:
            last_node_check = time.monotonic()
            if node_draining(node):
                with locked(paths):
                    return _leave(paths, job, f"node {node} is draining")
        if only and not paths.queued(only).exists():
            return _leave(paths, job, "its request is gone")
        # An idle pilot yields its node to a request that must be retried alone: on a
        # small (or busy) partition that request's own pilot may be waiting for this node.
        yielding = not only and _alone_waiting(paths)
        if yielding or time.monotonic() - idle_since >= idle_s or time.monotonic() >= stop_taking:
            with locked(paths):
                if time.monotonic() < stop_taking and _next_request(paths, only, pool):
                    continue
                why = "yielding to a request retried alone" if yielding else "idle or out of time"
                return _leave(paths, job, why)
        time.sleep(poll_s)


def stop(root: Path) -> list[str]:
    """End the campaign's pilots (after the campaign): scancel every job pilots/ names."""
    if not (root / "pilots").is_dir():
        return []
    paths = Paths(root)
    with locked(paths):
        jobs = sorted(p.stem for p in (root / "pilots").glob("*.json"))
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, check=False)
        for job in jobs:
            paths.pilot(job).unlink(missing_ok=True)
    return jobs
