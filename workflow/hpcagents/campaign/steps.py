"""One function per Snakemake step. Rules call these through the CLI and nothing else.

Each step reads JSON artifacts, does one thing and writes its artifacts atomically, so a
kill at any moment leaves either the finished artifact or none.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcagents.campaign.archive import read_archive
from hpcagents.campaign.feedback import best_feedback_block, feedback_block
from hpcagents.campaign.select import chain_end, finalists
from hpcagents.campaign.steptime import step_record
from hpcagents.core.artifacts import read_json, write_json
from hpcagents.core.layout import CampaignLayout
from hpcagents.judge import node_size, timinglock
from hpcagents.judge.evaluate import evaluate_source, failed_generation_record
from hpcagents.judge.finalround import final_round
from hpcagents.judge.machine import (
    MachineError,
    check_peak,
    default_cache_dir,
    find_cached,
    machine_model,
    model_for_host,
    roofline,
    usable_cores,
)
from hpcagents.judge.timing import BuildConfig, EvalConfig, provenance, source_sha256
from hpcagents.llm.agents import (
    BuildInfo,
    Previous,
    fit_pg,
    inspiration_for,
    pg_messages,
    run_pg,
    run_pm,
)
from hpcagents.llm.pool import pool_from_env
from hpcagents.spec.config import CampaignConfig
from hpcagents.spec.kernelspec import KernelSpec


@dataclass(frozen=True)
class FailedAttempt:
    """What a repair reads: the failed attempt before it (the repair rule's inputs)."""

    evaluation: Path
    generation: Path
    source: Path


def request_seed(cfg: CampaignConfig, iteration: int, pg: int, attempt: int) -> int:
    """A distinct, reproducible sampling seed per request slot."""
    return cfg.seed * 1_000_003 + iteration * 10_007 + pg * 101 + attempt


def build_info(
    cfg: CampaignConfig, best: dict[str, Any], cache_dir: Path | None = None
) -> BuildInfo:
    """The machine the agents are told about: the node that timed the incumbent.

    Its measured model comes from the machine cache (measured here when this is that
    node); without one the prompts carry only the CPU string and core count.
    """
    seen = best.get("machine") or {}
    cores = int(seen.get("cores") or 0)
    threads = cfg.threads or cores or usable_cores()
    try:
        model = model_for_host(
            cache_dir or default_cache_dir(), seen.get("host"), cfg.cc, cfg.cflags, threads
        )
    except MachineError as exc:
        print(f"hpcagents: warning: no machine model: {exc}", file=sys.stderr)
        model = None
    return BuildInfo(
        cc=cfg.cc,
        cflags=cfg.cflags,
        cpu_model=str(seen.get("cpu_model") or "unknown CPU"),
        cores=cores,
        threads=threads,
        machine=model.to_dict() if model else None,
    )


def baseline(
    cfg: CampaignConfig, kernel_name: str, baseline_source: Path, out: Path, generation: Path
) -> None:
    """Iteration 0: the kernel's own baseline source (``baseline_source``, in its folder)
    becomes attempt 0 of pg0: ``out`` (the candidate source) and its ``generation``."""
    kernel = cfg.kernel(kernel_name)
    src = Path(baseline_source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(out)
    write_json(
        generation,
        {
            "kernel": kernel.name,
            "iteration": 0,
            "pg": 0,
            "attempt": 0,
            "kind": "baseline",
            "strategy": "baseline",
            "strategy_description": f"the kernel's own baseline ({src.name})",
            "status": "ok",
            "reason": "",
            "source": str(out),
            "source_sha256": source_sha256(out),
            "llm": None,
            "step": step_record(),
        },
        "generation",
    )


def search_archive(cfg: CampaignConfig, archive: Path | None) -> tuple[Path | None, Any]:
    """The archive the prompts show (the previous iteration's ``archive``): (path,
    record) with ``campaign.search: archive``, (None, None) with greedy, the seed's
    prompts."""
    if cfg.search != "archive" or archive is None:
        return None, None
    return Path(archive), read_archive(archive)


def plan(
    cfg: CampaignConfig,
    kernel_name: str,
    iteration: int,
    best_json: Path,
    out: Path,
    archive_json: Path | None = None,
) -> None:
    """The PM plans iteration ``iteration`` from the previous ``best_json`` (and, with
    archive search, the previous iteration's ``archive_json``); writes ``out``."""
    kernel = cfg.kernel(kernel_name)
    best = read_json(best_json, "best")
    source = Path(best["source"]).read_text()
    archive_path, archive = search_archive(cfg, archive_json)
    pool = pool_from_env(cfg.llm)
    record = run_pm(
        pool,
        kernel,
        build_info(cfg, best),
        iteration,
        cfg.pgs,
        best,
        source,
        seed=request_seed(cfg, iteration, 0, 0),
        max_reasks=cfg.llm.max_reasks,
        budget=pool.prompt_budget(iteration, role="pm"),
        archive=archive,
    )
    record["best"] = str(best_json)
    record["search"] = cfg.search
    record["archive"] = str(archive_path) if archive is not None else None
    record["step"] = step_record()
    write_json(out, record, "plan")


def error_text(evaluation: dict[str, Any], generation: dict[str, Any]) -> str:
    """The exact error fed back to the PG: compiler output, or the harness's verdict."""
    status = evaluation["status"]
    if status in ("compile_error", "link_error") and evaluation.get("compile"):
        return evaluation["compile"]["output"].strip() or evaluation["reason"]
    if status in ("no_code", "truncated", "generation_error"):
        excerpt = generation.get("answer_excerpt", "")
        text = evaluation["reason"]
        if excerpt:
            text += f"\nThe start of your answer was:\n{excerpt[:1500]}"
        return text
    return evaluation["reason"]


def generate(
    cfg: CampaignConfig,
    kernel_name: str,
    iteration: int,
    pg: int,
    attempt: int,
    plan_json: Path,
    source_out: Path,
    generation_out: Path,
    failed: FailedAttempt | None = None,
) -> None:
    """One PG writes (or repairs) one attempt, from the kernel its plan starts from:
    ``source_out`` (the candidate, when the answer has code) and ``generation_out``. A
    repair (``attempt > 0``) reads the ``failed`` attempt before it."""
    kernel = cfg.kernel(kernel_name)
    plan_rec = read_json(plan_json, "plan")
    best = read_json(plan_rec["best"], "best")
    strategy = plan_rec["strategies"][(pg - 1) % len(plan_rec["strategies"])]
    previous = None
    if attempt > 0:
        if failed is None:
            raise ValueError("a repair attempt needs the failed attempt's files")
        prev_eval = read_json(failed.evaluation, "evaluation")
        prev_gen = read_json(failed.generation, "generation")
        previous = Previous(
            status=prev_eval["status"],
            error=error_text(prev_eval, prev_gen),
            source=Path(failed.source).read_text(),
            feedback=feedback_block(
                "What the compiler said about your previous attempt", prev_eval
            ),
        )
    best_source = Path(best["source"]).read_text()
    pool = pool_from_env(cfg.llm)
    build = build_info(cfg, best)
    siblings = [s for s in plan_rec["strategies"] if s["name"] != strategy["name"]]
    # archive search: a first attempt may be shown one other elite, for ideas
    archive = read_archive(plan_rec.get("archive")) if plan_rec.get("archive") else None
    named = strategy.get("inspiration")  # the PM may name the elite this strategy builds on
    inspiration = inspiration_for(archive, pg, named) if attempt == 0 else None

    def messages_for(chars: int, inspire: Any) -> list[dict[str, str]]:
        return pg_messages(
            kernel,
            build,
            iteration,
            pg,
            attempt,
            strategy,
            best,
            best_source,
            previous,
            max_error_chars=chars,
            siblings=siblings,
            inspiration=inspire,
            best_feedback=best_feedback_block(best) if previous is None else "",
        )

    budget = pool.prompt_budget(pg, role="pg")
    messages, context = fit_pg(budget, lambda chars: messages_for(chars, inspiration))
    if inspiration is not None and not context["fits"]:  # over the budget: it goes first
        inspiration = None
        messages, context = fit_pg(budget, lambda chars: messages_for(chars, None))
    record = run_pg(
        pool,
        kernel,
        messages,
        pg=pg,
        seed=request_seed(cfg, iteration, pg, attempt),
        source_out=source_out,
    )
    record.update(
        {
            "kernel": kernel.name,
            "iteration": iteration,
            "pg": pg,
            "attempt": attempt,
            "kind": "repair" if attempt else "generate",
            "strategy": strategy["name"],
            "strategy_description": strategy["description"],
            "inspiration": inspiration["id"] if inspiration else None,
            "source": str(source_out),
            "source_sha256": source_sha256(source_out),
            "context": context,
            "step": step_record(),
        }
    )
    write_json(generation_out, record, "generation")


def evaluate_attempt(
    cfg: CampaignConfig, kernel_name: str, source: Path, generation: Path, out: Path
) -> dict[str, Any]:
    """Evaluate the attempt's ``source`` (its ``generation`` says whether the answer had
    code: one without is not compiled); write ``out`` (its evaluation.json). The build
    folder is a temporary one beside ``out``, removed after."""
    attempt_dir = Path(out).parent
    kernel = cfg.kernel(kernel_name)
    gen = read_json(generation, "generation")
    source = Path(source)
    if gen["status"] != "ok":
        record = failed_generation_record(
            kernel, source, gen["status"], gen["reason"], BuildConfig(cfg.cc, cfg.cflags)
        )
    else:
        ecfg, sized = node_size.sized_config(
            kernel, out, cfg.cc, cfg.cflags, eval_config(cfg), cfg.raw.get("evaluation") or {}
        )
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=attempt_dir))
        try:
            record = evaluate_source(
                kernel, source, work, BuildConfig(cc=cfg.cc, cflags=cfg.cflags), ecfg
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        record["bench_size"] = sized
    if record["status"] == "ok":
        case, ref_s = record["timing"]["case"], record["reference"]["best_s"]
        figure = roofline_of(cfg, kernel, record["timing"]["best_s"], case, ref_s, record)
        record["roofline"] = figure
        record["pct_of_roofline"] = figure["pct_of_roofline"] if figure else None
    record["step"] = step_record()
    write_json(out, record, "evaluation")
    return record


def roofline_of(
    cfg: CampaignConfig,
    kernel: KernelSpec,
    best_s: float,
    case: dict[str, Any] | None = None,
    reference_s: float | None = None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Where a timed kernel sits under this host's measured roofline (None if unmeasurable).

    The machine model is measured once per host, flags and thread count, here where the
    evaluation runs (the timing slot locally, the exclusive node under Slurm), and cached.
    ``case`` is the case that was timed (the node-sized one); with ``reference_s`` the
    reference's rate there is checked against the model's peak (machine.check_peak: a
    reference above the peak re-measures the model), and the check goes in ``record``.
    """
    case = case or kernel.bench_case(cfg.bench_size if isinstance(cfg.bench_size, int) else None)
    threads = cfg.threads or usable_cores()
    try:
        model = find_cached(default_cache_dir(), socket.gethostname(), cfg.cc, cfg.cflags, threads)
        if model is None:
            # measured like a timing: never beside another evaluation's compile or run
            with timinglock.exclusive():
                model = machine_model(default_cache_dir(), cfg.cc, cfg.cflags, threads)
        if reference_s:
            ref_gflops = kernel.flops(case) / reference_s / 1e9
            if ref_gflops > model.peak_gflops:  # re-measured: like a timing, alone
                with timinglock.exclusive():
                    model, check = check_peak(default_cache_dir(), model, ref_gflops)
            else:
                model, check = check_peak(default_cache_dir(), model, ref_gflops)
            if record is not None:
                record["peak_check"] = check
            if check["status"] != "ok":
                print(f"hpcagents: peak check: {check['reason']}")
        return roofline(kernel.flops(case), kernel.bytes(case), best_s, model)
    except (MachineError, ValueError) as exc:
        print(f"no roofline figure: {exc}")
        return None


def eval_config(cfg: CampaignConfig) -> EvalConfig:
    return EvalConfig(
        repeats=cfg.repeats,
        warmup=cfg.warmup,
        timeout_s=cfg.timeout_s,
        bench_size=cfg.bench_size,
        blas=cfg.blas,
        threads=cfg.threads,
        scale_factor=cfg.scale_check,
    )


def final_round_max_rounds(cfg: CampaignConfig) -> int:
    """The final round's bound on timed rounds while its verdict is uncertain."""
    return max(cfg.repeats, cfg.final_round_max_rounds or 3 * cfg.repeats)


def final_round_step(
    cfg: CampaignConfig,
    kernel_name: str,
    iteration: int,
    finals: list[Path],
    previous: Path,
    out: Path,
) -> dict[str, Any]:
    """Re-time the iteration's finalists and the incumbent side by side (one exclusive job).

    ``finals`` are the evaluations that end each PG's chain (the workflow's input function
    walks them); the record lists them (``finals``), and selection reads them from there.

    The finalists are the ``cfg.finalists`` valid candidates with the highest % of the
    reference measured in their own run (a figure normalised by the reference timed beside
    it, so less sensitive to drift than raw GFLOP/s); the incumbent is the previous best.
    """
    kernel = cfg.kernel(kernel_name)
    prev = read_json(previous, "best")
    ends = [chain_end(f) for f in finals]
    chosen = finalists(ends, cfg.finalists)
    contenders = [("incumbent", Path(prev["source"]))] + [
        (f"pg{c['pg']}", CampaignLayout.source_beside(c["evaluation"], kernel.source))
        for c in chosen
    ]
    why = [
        {"label": "incumbent", "why": f"the best of iteration {iteration - 1}"},
        *(
            {
                "label": f"pg{c['pg']}",
                "why": f"valid; {c['pct_of_reference']:.1f}% of the reference in its own run",
            }
            for c in chosen
        ),
    ]
    if not chosen:
        record = {
            "kernel": kernel.name,
            "case": {},
            "flops": 0.0,
            "rounds": 0,
            "status": "ok",
            "reason": "nothing to re-time",
            "reference": None,
            "contenders": [],
            # where the (empty) round ran: nothing was built or timed
            "provenance": {
                **provenance(
                    BuildConfig(cfg.cc, cfg.cflags), None, 0, time.time(), eval_config(cfg)
                ),
            },
            "skipped": f"no valid candidate in iteration {iteration}: nothing to re-time",
        }
    else:
        ecfg, sized = node_size.sized_config(
            kernel, out, cfg.cc, cfg.cflags, eval_config(cfg), cfg.raw.get("evaluation") or {}
        )
        work = Path(tempfile.mkdtemp(prefix=".final-round-", dir=out.parent))
        try:
            record = final_round(
                kernel,
                contenders,
                work,
                BuildConfig(cfg.cc, cfg.cflags),
                ecfg,
                rounds=cfg.repeats,
                max_rounds=final_round_max_rounds(cfg),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        record["bench_size"] = sized
    ref_s = (record.get("reference") or {}).get("best_s")
    for entry in record["contenders"]:
        if entry["status"] == "ok" and entry.get("best_s"):
            figure = roofline_of(cfg, kernel, entry["best_s"], record["case"], ref_s, record)
            entry["roofline"] = figure
            entry["pct_of_roofline"] = figure["pct_of_roofline"] if figure else None
    record.update(iteration=iteration, finals=ends, finalists=why, step=step_record())
    write_json(out, record, "final_round")
    return record
