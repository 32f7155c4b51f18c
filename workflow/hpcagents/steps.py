"""One function per Snakemake step. Rules call these through the CLI and nothing else.

Each step reads JSON artifacts, does one thing and writes its artifacts atomically, so a
kill at any moment leaves either the finished artifact or none.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .agents import BuildInfo, Previous, fit_pg, pg_messages, run_pg, run_pm
from .artifacts import read_json, write_json
from .config import CampaignConfig
from .evaluate import BuildConfig, EvalConfig, evaluate_source, failed_generation_record
from .kernelspec import load_kernel
from .llm import pool_from_env


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def request_seed(cfg: CampaignConfig, iteration: int, pg: int, attempt: int) -> int:
    """A distinct, reproducible sampling seed per request slot."""
    return cfg.seed * 1_000_003 + iteration * 10_007 + pg * 101 + attempt


def build_info(cfg: CampaignConfig, best: dict[str, Any]) -> BuildInfo:
    machine = best.get("machine") or {}
    return BuildInfo(
        cc=cfg.cc,
        cflags=cfg.cflags,
        cpu_model=str(machine.get("cpu_model") or "unknown CPU"),
        cores=int(machine.get("cores") or 0),
    )


def baseline(cfg: CampaignConfig, kernel_name: str, out_dir: Path) -> None:
    """Iteration 0: the kernel's own baseline source becomes attempt 0 of pg0."""
    kernel = load_kernel(kernel_name)
    src = kernel.directory / kernel.source
    out = out_dir / kernel.source
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(out)
    write_json(
        out_dir / "generation.json",
        {
            "kernel": kernel.name,
            "iteration": 0,
            "pg": 0,
            "attempt": 0,
            "kind": "baseline",
            "strategy": "baseline",
            "strategy_description": f"the baseline source {src}",
            "status": "ok",
            "reason": "",
            "source": str(out),
            "source_sha256": _sha(out),
            "llm": None,
        },
        "generation",
    )


def plan(cfg: CampaignConfig, kernel_name: str, iteration: int, best_json: Path, out: Path) -> None:
    kernel = load_kernel(kernel_name)
    best = read_json(best_json, "best")
    source = Path(best["source"]).read_text()
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
    )
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
    best_json: Path,
    out_dir: Path,
    previous_dir: Path | None,
) -> None:
    kernel = load_kernel(kernel_name)
    plan_rec = read_json(plan_json, "plan")
    best = read_json(best_json, "best")
    strategy = plan_rec["strategies"][(pg - 1) % len(plan_rec["strategies"])]
    previous = None
    if attempt > 0:
        if previous_dir is None:
            raise ValueError("a repair attempt needs the previous attempt's directory")
        prev_eval = read_json(previous_dir / "evaluation.json", "evaluation")
        prev_gen = read_json(previous_dir / "generation.json", "generation")
        previous = Previous(
            status=prev_eval["status"],
            error=error_text(prev_eval, prev_gen),
            source=(previous_dir / kernel.source).read_text(),
        )
    best_source = Path(best["source"]).read_text()
    pool = pool_from_env(cfg.llm)
    messages, context = fit_pg(
        pool.prompt_budget(pg, role="pg"),
        lambda chars: pg_messages(
            kernel,
            build_info(cfg, best),
            iteration,
            pg,
            attempt,
            strategy,
            best,
            best_source,
            previous,
            max_error_chars=chars,
        ),
    )
    source_out = out_dir / kernel.source
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
            "source": str(source_out),
            "source_sha256": _sha(source_out),
            "context": context,
        }
    )
    write_json(out_dir / "generation.json", record, "generation")


def evaluate_attempt(cfg: CampaignConfig, kernel_name: str, attempt_dir: Path) -> dict[str, Any]:
    """Evaluate the attempt in ``attempt_dir``; a generation without code is not compiled."""
    kernel = load_kernel(kernel_name)
    gen = read_json(attempt_dir / "generation.json", "generation")
    source = attempt_dir / kernel.source
    if gen["status"] != "ok":
        record = failed_generation_record(
            kernel, source, gen["status"], gen["reason"], BuildConfig(cfg.cc, cfg.cflags)
        )
    else:
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=attempt_dir))
        try:
            record = evaluate_source(
                kernel,
                source,
                work,
                BuildConfig(cc=cfg.cc, cflags=cfg.cflags),
                EvalConfig(
                    repeats=cfg.repeats,
                    warmup=cfg.warmup,
                    timeout_s=cfg.timeout_s,
                    bench_size=cfg.bench_size,
                    blas=cfg.blas,
                    threads=cfg.threads,
                ),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    write_json(attempt_dir / "evaluation.json", record, "evaluation")
    return record
