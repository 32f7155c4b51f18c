"""Campaign view of one kernel: summary.json, a Markdown report and a terminal table.

Accounting is in tokens, calls and seconds, not dollars: local servers cost node-hours.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .artifacts import read_json, write_json, write_text_atomic
from .config import CampaignConfig
from .kernelspec import KernelError, load_kernel
from .llm_accounting import per_server
from .timeline import iteration_timing


def _llm_calls(kernel_dir: Path, iteration: int) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    plan = kernel_dir / f"iter{iteration}" / "plan.json"
    if plan.is_file():
        calls += read_json(plan, "plan")["llm_calls"]
    for gen in sorted((kernel_dir / f"iter{iteration}").glob("pg*/attempt*/generation.json")):
        llm = read_json(gen, "generation").get("llm")
        if llm:
            calls.append(llm)
    return calls


def reference_label(cfg: CampaignConfig, kernel: str) -> str:
    """The reference the kernel is measured against, as the table names it."""
    try:
        ref = load_kernel(kernel, cfg.kernel_search).reference
    except KernelError:
        return cfg.blas
    return cfg.blas if ref.library == "blas" else f"the reference {ref.file}"


def build_summary(cfg: CampaignConfig, kernel: str, kernel_dir: Path) -> dict[str, Any]:
    rows = []
    totals: dict[str, Any] = defaultdict(float)
    all_calls: list[dict[str, Any]] = []
    bests = [
        read_json(kernel_dir / f"iter{i}" / "best.json", "best") for i in range(cfg.iterations + 1)
    ]
    for best in bests:
        i = best["iteration"]
        cands = best["candidates"]
        calls = _llm_calls(kernel_dir, i)
        all_calls += calls
        plan = kernel_dir / f"iter{i}" / "plan.json"
        sel = best["selected"]
        row = {
            "iteration": i,
            "gflops": sel["gflops"],
            "pct_of_reference": sel["pct_of_reference"],
            "pct_of_roofline": sel.get("pct_of_roofline"),
            "changed": best["changed"],
            "winner_pg": sel["pg"],
            "winner_strategy": sel["strategy"],
            "winner_iteration": sel["iteration"],
            "candidates": len(cands),
            "valid": sum(c["status"] == "ok" for c in cands),
            "attempts": sum(c["attempts"] for c in cands),
            "repairs": sum(c["attempts"] - 1 for c in cands),
            "repairs_succeeded": sum(c["attempts"] > 1 and c["status"] == "ok" for c in cands),
            "llm_calls": len(calls),
            "tokens": sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls),
            "plan_origin": read_json(plan, "plan")["origin"] if plan.is_file() else "baseline",
            "reason": best["reason"],
            "decided_by": (best.get("decision") or {}).get("decided_by"),
            # [verdict] interleaved rounds the final round needed to decide (None: baseline)
            "final_round_rounds": (best.get("decision") or {}).get("rounds_used"),
        }
        # How the iteration ran: wall time vs the critical path through its DAG, LLM
        # requests in flight, server busy fractions (from the artifacts' own stamps).
        row.update(iteration_timing(kernel_dir / f"iter{i}") or {})
        rows.append(row)
        for key in ("attempts", "repairs", "repairs_succeeded", "llm_calls"):
            totals[key] += row[key]
        totals["cached_calls"] += sum(c["cached"] for c in calls)
        for key in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
            totals[key] += sum(c[key] for c in calls)
        totals["llm_latency_s"] += sum(c["latency_s"] for c in calls if not c["cached"])
        totals["retries"] += sum(c.get("retries", 0) for c in calls)
    base, final = bests[0]["selected"], bests[-1]["selected"]

    def point(sel: dict[str, Any]) -> dict[str, Any]:
        return {
            "iteration": sel["iteration"],
            "strategy": sel["strategy"],
            "gflops": sel["gflops"],
            "pct_of_reference": sel["pct_of_reference"],
            "pct_of_roofline": sel.get("pct_of_roofline"),
            "source": sel["source"],
        }

    int_keys = {"attempts", "repairs", "repairs_succeeded", "llm_calls", "cached_calls", "retries"}
    summary = {
        "kernel": kernel,
        "iterations": cfg.iterations,
        "pgs": cfg.pgs,
        "baseline": point(base),
        "final": point(final),
        "speedup": round(base["best_s"] / final["best_s"], 4),
        "rows": rows,
        "totals": {
            **{
                k: (int(v) if k in int_keys or k.endswith("tokens") else round(v, 3))
                for k, v in totals.items()
            },
            # per try, charged to the server that spent it: answering time, time lost
            # to faults (timeouts, errors, backoff), failovers in and out, tokens
            "per_server": per_server(all_calls),
        },
        "llm_servers": [
            {
                "name": s.name,
                "base_url": s.base_url,
                "model": s.model,
                "stand_in": s.model.startswith("scripted"),
            }
            for s in cfg.llm.servers
        ],
        "build": {
            "cc": cfg.cc,
            "cflags": list(cfg.cflags),
            "blas": cfg.blas,
            # what "% of reference" compares with: the BLAS routine, or the user's C file
            "reference": reference_label(cfg, kernel),
        },
    }
    for key in sorted(int_keys):
        summary["totals"].setdefault(key, 0)
    for key in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
        summary["totals"].setdefault(key, 0)
    summary["totals"].setdefault("llm_latency_s", 0.0)
    return summary


def _fig(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if isinstance(value, int | float) else f"{'-':>{width}}"


def _inflight(row: dict[str, Any]) -> str:
    if not row.get("llm_requests"):
        return "-"
    return f"{row['llm_inflight_max']} / {row['llm_inflight_mean']:.1f}"


def table(summary: dict[str, Any]) -> str:
    """The per-iteration table the demo prints."""
    head = (
        f"{'iter':>4}  {'GFLOP/s':>8}  {'% ref':>6}  {'% roof':>6}  {'winner':<28} {'valid':>5}  "
        f"{'attempts':>8}  {'repairs ok/all':>14}  {'tokens':>7}  {'wall s':>7}  "
        f"{'crit s':>7}  {'w/crit':>6}  {'in flight':>9}  {'rounds':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        mark = "" if r["changed"] else " (kept)"
        winner = f"pg{r['winner_pg']} {r['winner_strategy']}{mark}"
        lines.append(
            f"{r['iteration']:>4}  {r['gflops']:>8.2f}  {r['pct_of_reference']:>6.1f}  "
            f"{_fig(r.get('pct_of_roofline'), 6, 1)}  "
            f"{winner[:28]:<28} {r['valid']:>2}/{r['candidates']:<2}  {r['attempts']:>8}  "
            f"{r['repairs_succeeded']:>6}/{r['repairs']:<7}  {r['tokens']:>7}  "
            f"{_fig(r.get('wall_s'), 7, 1)}  {_fig(r.get('critical_path_s'), 7, 1)}  "
            f"{_fig(r.get('wall_over_critical'), 6, 2)}  "
            f"{_inflight(r):>9}  "
            f"{_fig(r.get('final_round_rounds'), 6, 0)}"
        )
    stand_in = any(s["stand_in"] for s in summary["llm_servers"])
    lines.append(
        f"{summary['kernel']}: {summary['baseline']['gflops']:.2f} -> "
        f"{summary['final']['gflops']:.2f} GFLOP/s, speedup x{summary['speedup']:.2f} over the "
        f"baseline, {summary['final']['pct_of_reference']:.1f}% of "
        f"{summary['build'].get('reference') or summary['build']['blas']}"
    )
    lines.append(
        "% roof: of this host's measured roofline, min(peak, intensity x bandwidth); "
        "wall s: the iteration's wall time; crit s: its critical path (plan + the slowest "
        "PG's generate/evaluate chain + final round + select); in flight: LLM requests in "
        "flight, max / mean while any; rounds: interleaved rounds the final round timed to "
        "decide (more while the verdict was uncertain)"
    )
    if stand_in:
        lines.append(
            "NOTE: answers came from the scripted model, a stand-in for an LLM: these figures "
            "measure the pipeline, not a model."
        )
    return "\n".join(lines)


def write_summary(
    cfg: CampaignConfig, kernel: str, kernel_dir: Path, out: Path, report: Path
) -> str:
    summary = build_summary(cfg, kernel, kernel_dir)
    write_json(out, summary, "summary")
    text = table(summary)
    write_text_atomic(report, f"# hpcagents campaign: {kernel}\n\n```\n{text}\n```\n")
    return text
