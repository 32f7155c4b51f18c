"""``hpcagents suite``: the scripted campaign on every kernel that ships a scripted/ set.

One campaign (one config, one Snakemake run, all kernels in it) in its own working
directory, answered by the scripted model in its default (deterministic) mode, ending in
one table: per kernel the baseline, the best, % of the reference, % of roofline (when the
evaluations carry it), iterations and repairs. The answers are the stand-in's, and the
table says so: it measures the pipeline on each kernel, not a model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from hpcagents.cluster.campaigns import (
    RunnerError,
    ScriptedModelProcess,
    exit_on_sigterm,
    load_base_config,
    run_campaign,
    scripted_kernels,
    scripted_server_entry,
    write_config,
)
from hpcagents.core.artifacts import read_json, write_text_atomic
from hpcagents.core.layout import RESULTS, CampaignLayout

NOTE = (
    "NOTE: answers came from the scripted model, a stand-in for an LLM: these figures "
    "measure the pipeline on each kernel, not a language model."
)


def suite_table(summaries: list[dict[str, Any]]) -> str:
    head = (
        f"{'kernel':<16} {'baseline':>9} {'best':>9} {'speedup':>8} {'% ref':>7} "
        f"{'of':<12} {'at 2x':>7} {'% roofline':>10} {'iters':>5} {'repairs ok/all':>14}  "
        "best strategy"
    )
    lines = ["GFLOP/s at each kernel's bench size", head, "-" * len(head)]
    stand_in = False
    for s in summaries:
        stand_in |= any(v.get("stand_in") for v in s["llm_servers"])
        final = s["final"]
        roof = final.get("pct_of_roofline")
        roof_txt = f"{roof:.1f}" if isinstance(roof, int | float) else "–"
        scaled = final.get("at_scale") or {}
        twice = scaled.get("pct_of_reference")
        twice_txt = (
            "–" if twice is None else f"{twice:.1f}" + ("" if scaled["figure_holds"] else "*")
        )
        t = s["totals"]
        lines.append(
            f"{s['kernel']:<16} {s['baseline']['gflops']:>9.2f} {final['gflops']:>9.2f} "
            f"{s['speedup']:>7.2f}x {final['pct_of_reference']:>7.1f} "
            f"{str(s['build'].get('reference') or s['build']['blas'])[:12]:<12} "
            f"{twice_txt:>7} {roof_txt:>10} "
            f"{s['iterations']:>5} {t['repairs_succeeded']:>6}/{t['repairs']:<7}  "
            f"{final['strategy']} (iter {final['iteration']})"
        )
    lines.append(
        "at 2x: % of the reference at twice every size, from the final round's scale check "
        "of the crown (*: more than 10% from the bench size's figure; –: not checked)"
    )
    for s in summaries:
        for warning in s.get("warnings") or []:
            lines.append(f"WARNING: {s['kernel']} {warning}")
    if stand_in:
        lines.append(NOTE)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", default=str(RESULTS / "suite"), help="the suite's working directory"
    )
    parser.add_argument(
        "--kernel", action="append", help="only these kernels (default: every scripted one)"
    )
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--pgs", type=int, default=4)
    parser.add_argument(
        "--bench-size",
        type=int,
        default=None,
        help="time every kernel with every size parameter = N (default: sized for this node)",
    )
    parser.add_argument("--config", default="config/config.yaml", help="base campaign config")
    parser.add_argument("--latency", type=float, default=0.05, help="scripted model latency (s)")
    parser.add_argument("--cores", help="Snakemake's --cores (default: the profile's job cap)")


def run_suite(args: argparse.Namespace) -> int:
    available = scripted_kernels()
    kernels = args.kernel or available
    unknown = sorted(set(kernels) - set(available))
    if unknown:
        raise RunnerError(
            f"no scripted/ set for kernel(s) {unknown}: the suite runs kernels whose folder has "
            f"scripted/script.yaml ({', '.join(available) or 'none'})"
        )
    workdir = Path(args.dir).resolve()
    raw = load_base_config(args.config)
    raw["kernels"] = list(kernels)
    raw["campaign"] = {**raw["campaign"], "iterations": args.iterations, "pgs": args.pgs}
    raw["evaluation"] = {**raw["evaluation"], "bench_size": args.bench_size}
    print(
        f"[suite] kernels: {', '.join(kernels)}; {args.iterations} iterations x "
        f"{args.pgs} PGs in {workdir}",
        flush=True,
    )
    start = time.monotonic()
    exit_on_sigterm()
    with ScriptedModelProcess(workdir / ".scripted", args.latency) as server:
        print(f"[suite] scripted model (a STAND-IN for an LLM) at {server.url}", flush=True)
        raw["llm"] = {**raw["llm"], "servers": [scripted_server_entry(server.url, args.pgs)]}
        write_config(workdir, raw)
        rc = run_campaign(workdir, args.cores, log_path=workdir / "snakemake.log")
    summaries = []
    layout = CampaignLayout(workdir / RESULTS)
    for k in kernels:
        path = layout.kernel(k).summary()
        if path.is_file():
            summaries.append(read_json(path, "summary"))
    text = suite_table(summaries)
    missing = [k for k in kernels if not layout.kernel(k).summary().is_file()]
    if missing:
        text += f"\nNOT FINISHED: {', '.join(missing)} (see {workdir / 'snakemake.log'})"
    write_text_atomic(workdir / "suite.md", f"# hpcagents suite\n\n```\n{text}\n```\n")
    print(text)
    print(
        f"[suite] {time.monotonic() - start:.0f} s; reports: "
        + ", ".join(str(layout.kernel(k).report_html()) for k in kernels)
    )
    if rc != 0:
        print(f"[suite] snakemake failed (exit {rc}); rerun the same command to resume")
    return rc
