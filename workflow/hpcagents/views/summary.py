"""Campaign view of one kernel: summary.json, a Markdown report and a terminal table.

Accounting is in tokens, calls and seconds, not dollars: local servers cost node-hours.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from hpcagents.campaign.reader import Iteration, read_iteration
from hpcagents.core.artifacts import read_json, read_json_or_none, write_json, write_text_atomic
from hpcagents.core.layout import KernelLayout
from hpcagents.judge import scale
from hpcagents.judge.figures import gbps_from_record
from hpcagents.judge.hostload import doubt_of, implausible, reference_name
from hpcagents.judge.machine import above_roof
from hpcagents.llm.accounting import per_server
from hpcagents.spec.config import CampaignConfig
from hpcagents.spec.kernelspec import KernelError
from hpcagents.views.timeline import iteration_timing


def _llm_calls(iteration: Iteration) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    if iteration.plan is not None:
        calls += iteration.plan["llm_calls"]
    for att in iteration.attempts():
        llm = (att.generation or {}).get("llm")
        if llm:
            calls.append(llm)
    return calls


def reference_label(cfg: CampaignConfig, kernel: str) -> str:
    """The reference the kernel is measured against, named as it is: MKL, OpenBLAS, or
    the user's file (``reference.c``)."""
    try:
        ref = cfg.kernel(kernel).reference
    except KernelError:
        return reference_name(cfg.blas)
    return reference_name(cfg.blas) if ref.library == "blas" else str(ref.file)


def iteration_doubt(
    best: dict[str, Any], final_round: dict[str, Any] | None, reference: str
) -> dict[str, Any]:
    """What puts the selected figure of an iteration in doubt: the host's load and the
    spread while the figures that decided were taken (the iteration's ``final_round``,
    or the baseline's own evaluation), and a % of a vendor BLAS beyond belief."""
    sel = best["selected"]
    fr = final_round if best["iteration"] > 0 else None
    ev = read_json_or_none(Path(sel["evaluation"])) if sel.get("evaluation") else None
    source = fr if fr is not None else ev
    host = ((source or {}).get("provenance") or {}).get("host_load")
    warnings = []
    words = doubt_of(host)
    if words:
        where = "final round" if fr is not None else "timing"
        warnings.append(f"{where}: {words}")
    lib = "mkl" if reference == "MKL" else "openblas" if reference == "OpenBLAS" else ""
    silly = implausible(sel.get("pct_of_reference"), lib)
    if silly:
        warnings.append(silly)
    roof = (ev or {}).get("roofline") or {}
    over = sel.get("pct_of_roofline")
    if isinstance(over, int | float) and over > 100.0:
        # never a figure above the roofline shown plainly: say so, and why it can be
        warnings.append(f"{over:.1f}% of the roofline: {above_roof(roof.get('bound') == 'memory')}")
    # the crowned figure meant only at the bench size: said where the figure is shown
    words = scale.doubt(sel.get("at_scale")) if best.get("changed") else ""
    if words:
        warnings.append(words)
    gbps = None
    if ev is not None:
        gbps = gbps_from_record(sel.get("gflops"), ev.get("roofline"))
    return {
        "host_busy": bool((host or {}).get("busy")),
        "noisy": bool((host or {}).get("noisy")),
        "runnable_per_core": (host or {}).get("runnable_per_core"),
        "warnings": warnings,
        "gbps": None if gbps is None else round(gbps, 3),
    }


def build_summary(
    cfg: CampaignConfig, kernel: str, kernel_dir: Path, best_files: list[Path] | None = None
) -> dict[str, Any]:
    """The summary of ``kernel``'s campaign from ``best_files`` (every iteration's
    best.json, in order; default: iterations 0..cfg.iterations under ``kernel_dir``) and
    the iterations' other artifacts, read through :mod:`hpcagents.campaign.reader`."""
    rows = []
    totals: dict[str, Any] = defaultdict(float)
    all_calls: list[dict[str, Any]] = []
    layout = KernelLayout(Path(kernel_dir))
    if best_files is None:
        best_files = [layout.best(i) for i in range(cfg.iterations + 1)]
    bests = [read_json(path, "best") for path in best_files]
    its = {b["iteration"]: read_iteration(layout, b["iteration"], strict=True) for b in bests}
    for best in bests:
        i = best["iteration"]
        it = its[i]
        cands = best["candidates"]
        calls = _llm_calls(it)
        all_calls += calls
        sel = best["selected"]
        row = {
            "iteration": i,
            "gflops": sel["gflops"],
            "pct_of_reference": sel["pct_of_reference"],
            "pct_of_roofline": sel.get("pct_of_roofline"),
            # [scale] % of the reference at the final round's scale case (None: not checked)
            "pct_at_scale": (sel.get("at_scale") or {}).get("pct_of_reference"),
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
            "plan_origin": it.plan["origin"] if it.plan is not None else "baseline",
            "reason": best["reason"],
            "decided_by": (best.get("decision") or {}).get("decided_by"),
            # [verdict] interleaved rounds the final round needed to decide (None: baseline)
            "final_round_rounds": (best.get("decision") or {}).get("rounds_used"),
        }
        # How the iteration ran: wall time vs the critical path through its DAG, LLM
        # requests in flight, server busy fractions (from the artifacts' own stamps).
        row.update(iteration_timing(it) or {})
        rows.append(row)
        for key in ("attempts", "repairs", "repairs_succeeded", "llm_calls"):
            totals[key] += row[key]
        totals["cached_calls"] += sum(c["cached"] for c in calls)
        totals["estimated_token_calls"] += sum(bool(c.get("tokens_estimated")) for c in calls)
        for key in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
            totals[key] += sum(c[key] for c in calls)
        totals["llm_latency_s"] += sum(c["latency_s"] for c in calls if not c["cached"])
        totals["retries"] += sum(c.get("retries", 0) for c in calls)
    base, final = bests[0]["selected"], bests[-1]["selected"]
    ref_name = reference_label(cfg, kernel)
    doubts = [iteration_doubt(b, its[b["iteration"]].final_round, ref_name) for b in bests]
    for row, doubt in zip(rows, doubts, strict=True):
        row["gbps"] = doubt["gbps"]
        row["doubt"] = doubt["warnings"]

    def point(sel: dict[str, Any], doubt: dict[str, Any]) -> dict[str, Any]:
        return {
            "gbps": doubt["gbps"],
            "iteration": sel["iteration"],
            "strategy": sel["strategy"],
            "gflops": sel["gflops"],
            "pct_of_reference": sel["pct_of_reference"],
            "pct_of_roofline": sel.get("pct_of_roofline"),
            "source": sel["source"],
            "at_scale": sel.get("at_scale"),
        }

    int_keys = {
        "attempts",
        "repairs",
        "repairs_succeeded",
        "llm_calls",
        "cached_calls",
        "retries",
        "estimated_token_calls",
    }
    summary = {
        "kernel": kernel,
        "iterations": cfg.iterations,
        "pgs": cfg.pgs,
        "baseline": point(base, doubts[0]),
        "final": point(final, doubts[-1]),
        # every figure with its doubt: busy host, wide spread, an implausible % (words)
        "warnings": [f"iteration {row['iteration']}: {w}" for row in rows for w in row["doubt"]],
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
            "reference": ref_name,
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


def _at_scale_words(at_scale: dict[str, Any] | None) -> str:
    if not at_scale:
        return ""
    case = ", ".join(f"{k}={v}" for k, v in at_scale["case"].items() if isinstance(v, int))
    return f" ({at_scale['pct_of_reference']:.1f}% at {at_scale['factor']:g}x: {case})"


def table(summary: dict[str, Any]) -> str:
    """The per-iteration table the demo prints."""
    head = (
        f"{'iter':>4}  {'GFLOP/s':>8}  {'GB/s':>6}  {'% ref':>6}  {'at 2x':>6}  {'% roof':>6}  "
        f"{'winner':<28} {'valid':>5}  "
        f"{'attempts':>8}  {'repairs ok/all':>14}  {'tokens':>7}  {'wall s':>7}  "
        f"{'crit s':>7}  {'w/crit':>6}  {'in flight':>9}  {'rounds':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        mark = "" if r["changed"] else " (kept)"
        winner = f"pg{r['winner_pg']} {r['winner_strategy']}{mark}"
        lines.append(
            f"{r['iteration']:>4}{'!' if r.get('doubt') else ' '} {r['gflops']:>8.2f}  "
            f"{_fig(r.get('gbps'), 6, 2)}  {r['pct_of_reference']:>6.1f}  "
            f"{_fig(r.get('pct_at_scale'), 6, 1)}  {_fig(r.get('pct_of_roofline'), 6, 1)}  "
            f"{winner[:28]:<28} {r['valid']:>2}/{r['candidates']:<2}  {r['attempts']:>8}  "
            f"{r['repairs_succeeded']:>6}/{r['repairs']:<7}  {r['tokens']:>7}  "
            f"{_fig(r.get('wall_s'), 7, 1)}  {_fig(r.get('critical_path_s'), 7, 1)}  "
            f"{_fig(r.get('wall_over_critical'), 6, 2)}  "
            f"{_inflight(r):>9}  "
            f"{_fig(r.get('final_round_rounds'), 6, 0)}"
        )
    stand_in = any(s["stand_in"] for s in summary["llm_servers"])
    ref = summary["build"].get("reference") or reference_name(summary["build"]["blas"])
    base, final = summary["baseline"], summary["final"]
    bw = ""
    if isinstance(final.get("gbps"), int | float):
        before = f"{base['gbps']:.2f} -> " if isinstance(base.get("gbps"), int | float) else ""
        bw = f" ({before}{final['gbps']:.2f} GB/s: memory-bound)"
    lines.append(
        f"{summary['kernel']}: {base['gflops']:.2f} -> {final['gflops']:.2f} GFLOP/s{bw}, "
        f"speedup x{summary['speedup']:.2f} over the baseline, "
        f"{final['pct_of_reference']:.1f}% of {ref}{_at_scale_words(final.get('at_scale'))}"
    )
    for warning in summary.get("warnings") or []:
        lines.append(f"WARNING: {warning}")
    estimated = (summary.get("totals") or {}).get("estimated_token_calls") or 0
    if estimated:
        lines.append(
            f"NOTE: the tokens of {estimated} of {summary['totals']['llm_calls']} LLM calls are "
            "estimates (3 characters a token): their answers carried no counts (a file queue)"
        )
    lines.append(
        f"% ref: of {ref}; at 2x: % of {ref} at the final round's scale case (every size "
        "x evaluation.scale_check, re-timed before the crown; -: not checked); GB/s: bytes "
        "moved (kernel.yaml's bytes), for a memory-bound kernel; !: a figure in doubt "
        "(WARNING below); "
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
    cfg: CampaignConfig,
    kernel: str,
    kernel_dir: Path,
    best_files: list[Path],
    out: Path,
    report: Path,
) -> str:
    """Write ``out`` (summary.json) and ``report`` (report.md); return the table."""
    summary = build_summary(cfg, kernel, kernel_dir, best_files)
    write_json(out, summary, "summary")
    text = table(summary)
    write_text_atomic(report, f"# hpcagents campaign: {kernel}\n\n```\n{text}\n```\n")
    return text
