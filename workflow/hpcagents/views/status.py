"""``hpcagents status``: where a campaign is, read from its files alone.

Run beside a campaign that is still going (locally or under Slurm: the Snakemake process
stays on the login node), or after a crash. It only reads: the artifacts (which exist
tells what finished), Snakemake's ``.snakemake/incomplete`` markers (which job has started
and not finished; under Slurm a marker holds the job's Slurm id) and lock files, and the
process table (is a Snakemake running in that directory?). It never takes Snakemake's
lock, so it is safe at any moment.

Per PG the state is one of:

* ``preparing``: iteration 0 copies the baseline (no LLM);
* ``waiting``: the plan exists but the PG's job has not started (e.g. no LLM slot free);
* ``generating`` / ``repairing``: its LLM request is in flight (attempt 0 / a repair);
* ``queued for evaluation``: the candidate is written, its evaluation not started;
* ``evaluating``: compile, validate and time are running (``slurm job N`` under Slurm);
* ``repair due``: the last attempt failed and a repair attempt is allowed;
* ``done``: an attempt passed; ``failed``: the last allowed attempt failed;
* ``cut``: the job had started when the campaign stopped (a rerun redoes it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcagents.campaign.reader import PG, read_kernel
from hpcagents.campaign.repair import ends_chain
from hpcagents.core.artifacts import read_json_or_none
from hpcagents.core.layout import RESULTS, CampaignLayout
from hpcagents.core.lifeline import campaign_processes, snakemake_processes
from hpcagents.judge.figures import gbps_from_record
from hpcagents.judge.hostload import doubt_of, implausible, reference_name
from hpcagents.spec.effective import FROZEN, current_config


def made_by_note(results: Path) -> list[str]:
    """The changes of settings recorded for this results folder, one line each."""
    from hpcagents.spec.frozen import made_by

    rec = made_by(results) or {}
    out = []
    for h in rec.get("history") or []:
        keys = ", ".join(
            f"{c['key']}: {json.dumps(c['old'])} -> {json.dumps(c['new'])}"[:100]
            for c in h.get("changes") or []
        )
        if h.get("allowed"):
            if keys:
                out.append(f"settings changed at {h['at']} (figures unaffected): {keys}")
        elif keys:
            out.append(f"settings changed at {h['at']}, accepted, figures made again: {keys}")
    return out[-5:]


def incomplete_jobs(workdir: Path) -> dict[str, str | None]:
    """Outputs of jobs Snakemake has started and not finished: path -> external job id.

    Snakemake records each as ``.snakemake/incomplete/<urlsafe base64 of the path>``
    (split into chunks of at most 254 characters, all but the last prefixed with ``@``),
    holding ``{"external_jobid": ...}`` (a Slurm job id under Slurm).
    """
    root = workdir / ".snakemake" / "incomplete"
    out: dict[str, str | None] = {}
    if not root.is_dir():
        return out
    for dirpath, _, files in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        if any(not part.startswith("@") for part in rel):
            continue
        for name in files:
            if name == "migration_underway":
                continue
            b64 = "".join(part[1:] for part in rel) + name
            try:
                path = base64.urlsafe_b64decode(b64.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            rec = read_json_or_none(Path(dirpath) / name) or {}
            job = rec.get("external_jobid")
            out[path] = str(job) if job else None
    return out


@dataclass
class PGState:
    pg: int
    strategy: str
    attempt: int
    state: str
    detail: str = ""


@dataclass
class KernelStatus:
    kernel: str
    iteration: int | None
    iterations: int | None
    finished: bool
    phase: str
    pgs: list[PGState] = field(default_factory=list)
    best: dict[str, Any] | None = None
    failures: dict[str, int] = field(default_factory=dict)
    pgs_failed: int = 0
    attempts: int = 0


@dataclass
class CampaignStatus:
    workdir: str
    running: list[int]
    locked: bool
    kernels: list[KernelStatus]
    config: dict[str, Any] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)  # live, of this campaign
    made_by: list[str] = field(default_factory=list)  # changes recorded in made-by.json

    @property
    def stand_in(self) -> bool:
        servers = (self.config.get("llm") or {}).get("servers") or []
        return any(str(s.get("model", "")).startswith("scripted") for s in servers)


def _done_detail(ev: dict[str, Any]) -> str:
    """GFLOP/s, GB/s for a memory-bound kernel, % of the reference named as it is, and
    the doubt on the figure in words."""
    gf = (ev.get("timing") or {}).get("gflops")
    pct = ev.get("pct_of_reference")
    detail = f"{gf:.2f} GFLOP/s" if isinstance(gf, int | float) else ""
    gbps = gbps_from_record(gf, ev.get("roofline"))
    if gbps is not None:
        detail += f", {gbps:.2f} GB/s"
    name = reference_name((ev.get("reference") or {}).get("name"))
    if isinstance(pct, int | float):
        detail += f" ({pct:.1f}% of {name})"
    words = doubt_of((ev.get("provenance") or {}).get("host_load"))
    if words:
        detail += f" [{words}]"
    silly = implausible(pct, (ev.get("reference") or {}).get("name"))
    if silly:
        detail += f" [WARNING: {silly}]"
    return detail


def _pg_state(
    iteration: int,
    pg_run: PG | None,
    pg: int,
    strategy: str,
    workdir: Path,
    inflight: dict[str, str | None],
    running: bool,
    max_repairs: int | None,
    live: dict[str, int] | None = None,
) -> PGState:
    attempts = pg_run.attempts if pg_run is not None else []
    if not attempts:
        return PGState(pg, strategy, 0, "waiting", "its first request has not started")
    last = attempts[-1]
    a, adir = last.attempt, last.directory
    rel = adir.relative_to(workdir).as_posix() if adir.is_relative_to(workdir) else str(adir)
    gen, ev = last.generation, last.evaluation
    prev = attempts[-2].evaluation if len(attempts) > 1 else None
    why = f" after {prev.get('status')}" if prev else ""
    if gen is None and pg == 0:
        return PGState(pg, strategy, a, "preparing", "copying the baseline source")
    live = live or {}
    if gen is None:
        state = "repairing" if a > 0 else "generating"
        pid = live.get(f"{rel}/generation.json")
        if not running and pid:
            return PGState(pg, strategy, a, state, f"orphaned (pid {pid}), Snakemake is gone")
        if not running and f"{rel}/generation.json" in inflight:
            return PGState(pg, strategy, a, "cut", f"its {state} job was cut{why}")
        return PGState(pg, strategy, a, state, f"LLM request in flight{why}")
    if ev is None:
        key = f"{rel}/evaluation.json"
        if not running and live.get(key):
            return PGState(
                pg,
                strategy,
                a,
                "evaluating",
                f"orphaned (pid {live[key]}): Snakemake is gone; the next start ends it",
            )
        if key in inflight:
            if not running:
                return PGState(pg, strategy, a, "cut", "its evaluation was cut (no process runs)")
            job = inflight[key]
            where = f"slurm job {job}" if job else "compile, validate, time"
            return PGState(pg, strategy, a, "evaluating", where)
        if gen.get("status") not in (None, "ok"):
            return PGState(pg, strategy, a, "queued for evaluation", f"answer: {gen['status']}")
        return PGState(pg, strategy, a, "queued for evaluation")
    status = str(ev.get("status"))
    if status == "ok":
        detail = _done_detail(ev)
        if a:
            detail += f", after {a} repair{'s' if a > 1 else ''}"
        if (ev.get("race_check") or {}).get("status") == "skipped":  # issue 25: said aloud
            detail += f"; race check skipped: {ev['race_check'].get('reason', '')[:60]}"
        return PGState(pg, strategy, a, "done", detail)
    reason = str(ev.get("reason", ""))[:90]
    if ends_chain(iteration, a, status, max_repairs):  # the workflow's own repair policy
        return PGState(pg, strategy, a, "failed", f"{status}: {reason}")
    return PGState(pg, strategy, a, "repair due", f"{status}: {reason}")


def kernel_status(
    workdir: Path,
    kernel_dir: Path,
    cfg: dict[str, Any],
    inflight: dict[str, str | None],
    running: bool,
    live: dict[str, int] | None = None,
) -> KernelStatus:
    camp = cfg.get("campaign") or {}
    iterations, n_pgs, max_repairs = (
        camp.get("iterations"),
        camp.get("pgs"),
        camp.get("max_repairs"),
    )
    run = read_kernel(kernel_dir)
    its = run.iterations
    finished = run.layout.summary().is_file()
    ks = KernelStatus(run.name, its[-1].iteration if its else None, iterations, finished, "")
    # failures and the best so far, over every evaluated attempt
    counts: Counter[str] = Counter()
    for att in run.attempts():
        if att.evaluation is None:
            continue
        ks.attempts += 1
        if att.status != "ok":
            counts[str(att.status)] += 1
    ks.failures = dict(sorted(counts.items()))
    for it in reversed(its):
        i, best = it.iteration, it.best
        if best:
            sel = best.get("selected") or {}
            ev = read_json_or_none(workdir / sel["evaluation"]) if sel.get("evaluation") else None
            fr = it.final_round if i > 0 else None
            host = ((fr or ev or {}).get("provenance") or {}).get("host_load")
            ref = (ev or {}).get("reference") or {}
            ks.best = {
                "reference": reference_name(ref.get("name")),
                "gbps": gbps_from_record(sel.get("gflops"), (ev or {}).get("roofline")),
                "doubt": doubt_of(host),
                "implausible": implausible(sel.get("pct_of_reference"), ref.get("name")),
                "after_iteration": i,
                "iteration": sel.get("iteration"),
                "pg": sel.get("pg"),
                "strategy": sel.get("strategy"),
                "gflops": sel.get("gflops"),
                "pct_of_reference": sel.get("pct_of_reference"),
                "pct_of_roofline": sel.get("pct_of_roofline"),
            }
            break
    for it in its:
        if it.best:
            ks.pgs_failed += sum(
                1
                for c in it.best.get("candidates") or []
                if c.get("status") != "ok" and it.iteration > 0
            )
    if finished:
        ks.phase = "finished (summary.json written)"
        return ks
    if not its:
        ks.phase = "not started"
        return ks
    last = its[-1]
    i = last.iteration
    if last.best is not None or run.layout.best(i).is_file():
        ks.phase = f"iteration {i} selected; next plan not started"
        if iterations is not None and i >= iterations:
            ks.phase = f"iteration {i} selected; summary pending"
        return ks
    if i == 0:
        ks.pgs = [_pg_state(0, last.pg(0), 0, "baseline", workdir, inflight, running, 0, live)]
        ks.phase = "baseline"
        return ks
    plan = last.plan
    if plan is None:
        key = run.layout.plan(i).relative_to(workdir).as_posix()
        cut = not running and key in inflight
        ks.phase = "planning (PM request " + ("cut)" if cut else "in flight)")
        return ks
    strategies = [s.get("name", "?") for s in plan.get("strategies") or []]
    n = n_pgs or len(strategies)
    ks.pgs = [
        _pg_state(
            i,
            last.pg(j),
            j,
            strategies[j - 1] if j - 1 < len(strategies) else "?",
            workdir,
            inflight,
            running,
            max_repairs,
            live,
        )
        for j in range(1, n + 1)
    ]
    states = Counter(p.state for p in ks.pgs)
    if all(p.state in ("done", "failed") for p in ks.pgs):
        ks.phase = "selecting"
    else:
        ks.phase = "PGs at work: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
    return ks


def campaign_status(workdir: Path, results: Path | None = None) -> CampaignStatus:
    workdir = Path(workdir).resolve()
    results = Path(results) if results else workdir / RESULTS
    if not results.is_absolute():
        results = workdir / results
    layout = CampaignLayout(results)
    effective = current_config(layout)
    cfg = (read_json_or_none(effective) if effective else None) or {}
    cfg.pop(FROZEN, None)  # the frozen kernel specs: the config is what status shows
    kernels = list(cfg.get("kernels") or [])
    # kernels with results but not in the config (e.g. the config was changed since)
    kernels += [k for k in layout.kernels() if k not in kernels]
    inflight = incomplete_jobs(workdir)
    running = snakemake_processes(workdir)
    procs = campaign_processes(workdir, {os.getpid()})
    live = {}
    for p in procs:
        if p.out:
            out = Path(p.out)
            if out.is_absolute() and out.is_relative_to(workdir):
                out = out.relative_to(workdir)
            live[out.as_posix()] = p.pid
    locks = workdir / ".snakemake" / "locks"
    locked = locks.is_dir() and any(locks.iterdir())
    return CampaignStatus(
        str(workdir),
        running,
        locked,
        [
            kernel_status(workdir, layout.kernel(k).directory, cfg, inflight, bool(running), live)
            for k in kernels
        ],
        cfg,
        [asdict(p) for p in procs if p.step != "snakemake"],
        made_by_note(results),
    )


def format_status(st: CampaignStatus) -> str:
    if st.running:
        head = f"snakemake running (pid {', '.join(map(str, st.running))})"
    elif st.locked:
        head = (
            "NOT running, and the directory is still locked: the run was killed or crashed. "
            "Resume with `hpcagents run` (`--slurm` under Slurm; `make demo` for the demo)"
        )
    else:
        head = "not running"
    lines = [f"campaign {st.workdir}: {head}"]
    if not st.running and st.processes:
        lines.append(
            f"  but {len(st.processes)} process(es) of it still run without Snakemake "
            "(the next `hpcagents run` ends them): "
            + "; ".join(f"{p['step']} pid {p['pid']}" for p in st.processes[:6])
        )
    for note in st.made_by:
        lines.append(f"  {note}")
    if st.stand_in:
        lines.append(
            "(LLM: the scripted model, a stand-in that answers from hand-written variants)"
        )
    if not st.kernels:
        lines.append("no campaign results here yet")
    for k in st.kernels:
        it = "-" if k.iteration is None else str(k.iteration)
        of = f" of {k.iterations}" if k.iterations is not None else ""
        lines.append(f"\n{k.kernel}: iteration {it}{of} — {k.phase}")
        if k.best and isinstance(k.best.get("gflops"), int | float):
            b = k.best
            pct = b.get("pct_of_reference")
            ref = b.get("reference") or "the reference"
            extra = f", {b['gbps']:.2f} GB/s" if isinstance(b.get("gbps"), int | float) else ""
            extra += f", {pct:.1f}% of {ref}" if isinstance(pct, int | float) else ""
            roof = b.get("pct_of_roofline")
            if isinstance(roof, int | float):
                extra += f", {roof:.1f}% of roofline"
            lines.append(
                f"  best so far: {b['gflops']:.2f} GFLOP/s{extra} — iteration "
                f"{b['iteration']} pg{b['pg']} {b['strategy']} (selected after iteration "
                f"{b['after_iteration']})"
            )
            if b.get("doubt"):
                lines.append(f"  WARNING: {b['doubt']}")
            if b.get("implausible"):
                lines.append(f"  WARNING: {b['implausible']}")
        else:
            lines.append("  best so far: none yet (the baseline is not selected)")
        fails = sum(k.failures.values())
        detail = ", ".join(f"{s} {n}" for s, n in k.failures.items())
        lines.append(
            f"  failures so far: {fails} of {k.attempts} evaluated attempts"
            + (f" ({detail})" if detail else "")
            + f"; {k.pgs_failed} PG(s) ended without a valid kernel"
        )
        for p in k.pgs:
            lines.append(
                f"  pg{p.pg:<2} {p.strategy[:26]:<26} attempt {p.attempt}  {p.state:<21} "
                f"{p.detail}".rstrip()
            )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", default=".", help="the campaign's working directory (where snakemake runs)"
    )
    parser.add_argument("--results", help="its results directory (default: <dir>/results)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_status(args: argparse.Namespace) -> int:
    if not Path(args.dir).is_dir():
        from hpcagents.spec.config import ConfigError

        raise ConfigError(f"--dir {args.dir}: no such directory (give the campaign's directory)")
    st = campaign_status(Path(args.dir), Path(args.results) if args.results else None)
    if args.json:
        print(json.dumps({**asdict(st), "stand_in": st.stand_in}, indent=2))
    else:
        print(format_status(st))
    return 0
