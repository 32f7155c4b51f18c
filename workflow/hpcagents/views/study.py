"""``hpcagents study``: the seed's question — do more parallel PGs find better kernels?

One campaign per number of PGs N and per repeat r, with the same model, servers, kernel,
iterations and bench size, each in its own working directory ``<dir>/N<n>-r<r>/``
(config.yaml + results/), run by real Snakemake and so resumable: rerunning the same
command skips finished campaigns and resumes a cut one. Repeat r uses campaign seed
``seed + r`` for every N, so the Ns of one repeat are paired.

It ends in ``study.json`` (validated), ``study.md`` (the table), ``study.png`` (the figure)
and ``study.html`` (both, self-contained): best GFLOP/s per iteration for each N (mean and
spread over repeats), wall time, LLM calls and tokens per N, and the headline ratio
best(N max) / best(N min).

By default the answers come from the scripted model in its stochastic mode (the PM
draws its N strategies by the request's seed): a stand-in that exercises the pipeline,
not an LLM, and every output of the study says so. ``--llm config`` uses the servers of
the config file instead.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import time
from pathlib import Path
from typing import Any

from hpcagents.cluster.campaigns import (
    RunnerError,
    ScriptedModelProcess,
    exit_on_sigterm,
    load_base_config,
    run_campaign,
    scripted_server_entry,
    write_config,
)
from hpcagents.core.artifacts import read_json, write_json, write_text_atomic
from hpcagents.core.layout import LLM_CACHE, RESULTS, CampaignLayout

STAND_IN_NOTE = (
    "NOTE: answers came from the scripted model (stochastic mode), a stand-in for an LLM: "
    "these figures measure the pipeline and the selection, not a language model."
)


def parse_pgs(text: str) -> list[int]:
    try:
        pgs = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise RunnerError(
            f"--pgs {text!r}: give numbers of PGs separated by commas, e.g. 1,2,4,8"
        ) from None
    if not pgs or pgs[0] < 1:
        raise RunnerError(f"--pgs {text!r}: every number of PGs must be at least 1")
    return pgs


def run_dir(study_dir: Path, n: int, r: int) -> Path:
    return study_dir / f"N{n}-r{r}"


def campaign_raw(
    base: dict[str, Any], args: argparse.Namespace, n: int, r: int, url: str | None
) -> dict[str, Any]:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    raw["kernels"] = [args.kernel]
    raw["campaign"] = {
        **raw["campaign"],
        "iterations": args.iterations,
        "pgs": n,
        "seed": args.seed + r,
    }
    raw["evaluation"] = dict(raw["evaluation"])
    if args.bench_size is not None:
        raw["evaluation"]["bench_size"] = args.bench_size
    # one node-sized bench case for every run of the study (hpcagents.judge.node_size)
    raw["evaluation"].setdefault("bench_size_dir", str(Path(args.dir).resolve() / "bench_size"))
    if url is not None:
        raw["llm"] = {**raw["llm"], "servers": [scripted_server_entry(url, max(4, n))]}
    # every run keeps its own cache, so a run replays only its own answers
    raw["llm"]["cache_dir"] = str(LLM_CACHE)
    return raw


def _finished(workdir: Path, kernel: str, iterations: int, n: int) -> bool:
    path = CampaignLayout(workdir / RESULTS).kernel(kernel).summary()
    if not path.is_file():
        return False
    s = read_json(path, "summary")
    return s["iterations"] == iterations and s["pgs"] == n


def run_one(
    study_dir: Path,
    args: argparse.Namespace,
    base: dict[str, Any],
    n: int,
    r: int,
    url: str | None,
) -> dict[str, Any]:
    workdir = run_dir(study_dir, n, r)
    record_path = workdir / "study-run.json"
    record = (
        read_json(record_path, "study_run")
        if record_path.is_file()
        else {"n": n, "repeat": r, "seed": args.seed + r, "wall_s": 0.0, "invocations": 0}
    )
    if _finished(workdir, args.kernel, args.iterations, n):
        print(f"[study] N={n} repeat {r}: finished before, kept ({workdir})", flush=True)
        return record
    write_config(workdir, campaign_raw(base, args, n, r, url))
    print(f"[study] N={n} repeat {r} (seed {args.seed + r}): running in {workdir}", flush=True)
    start = time.monotonic()
    rc = run_campaign(workdir, args.cores, log_path=workdir / "snakemake.log")
    record["wall_s"] = round(record["wall_s"] + time.monotonic() - start, 3)
    record["invocations"] += 1
    write_json(record_path, record, "study_run")
    if rc != 0:
        raise RunnerError(
            f"the campaign N={n} repeat {r} failed (snakemake exit {rc}); see "
            f"{workdir / 'snakemake.log'}; rerun the same command to resume"
        )
    return record


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
    }


def aggregate(
    study_dir: Path, kernel: str, pgs: list[int], repeats: int, iterations: int
) -> dict[str, Any]:
    """study.json from the runs' summaries (only the runs that finished count)."""
    per_n = []
    stand_in = False
    for n in pgs:
        runs = []
        for r in range(repeats):
            wd = run_dir(study_dir, n, r)
            spath = CampaignLayout(wd / RESULTS).kernel(kernel).summary()
            if not spath.is_file():
                continue
            s = read_json(spath, "summary")
            rec = read_json(wd / "study-run.json", "study_run")
            stand_in |= any(v.get("stand_in") for v in s["llm_servers"])
            t = s["totals"]
            runs.append(
                {
                    "repeat": r,
                    "seed": rec["seed"],
                    "best_per_iteration": [row["gflops"] for row in s["rows"]],
                    "final_gflops": s["final"]["gflops"],
                    "final_pct_of_reference": s["final"]["pct_of_reference"],
                    "final_strategy": s["final"]["strategy"],
                    "wall_s": rec["wall_s"],
                    "llm_calls": t["llm_calls"],
                    "tokens": t["prompt_tokens"] + t["completion_tokens"],
                    "repairs": t["repairs"],
                }
            )
        if not runs:
            continue
        per_it = [
            _stats([run["best_per_iteration"][i] for run in runs]) for i in range(iterations + 1)
        ]
        per_n.append(
            {
                "n": n,
                "runs": runs,
                "best_per_iteration": per_it,
                "final_gflops": _stats([run["final_gflops"] for run in runs]),
                "final_pct_of_reference": _stats([run["final_pct_of_reference"] for run in runs]),
                "wall_s": _stats([run["wall_s"] for run in runs]),
                "llm_calls": _stats([float(run["llm_calls"]) for run in runs]),
                "tokens": _stats([float(run["tokens"]) for run in runs]),
            }
        )
    ratio = None
    if len(per_n) >= 2:
        lo, hi = per_n[0], per_n[-1]
        ratio = {
            "n_low": lo["n"],
            "n_high": hi["n"],
            "ratio": round(hi["final_gflops"]["mean"] / lo["final_gflops"]["mean"], 4),
        }
    return {
        "kernel": kernel,
        "pgs": pgs,
        "repeats": repeats,
        "iterations": iterations,
        "stand_in": stand_in,
        "per_n": per_n,
        "headline": ratio,
    }


def table(study: dict[str, Any]) -> str:
    its = study["iterations"]
    head = (
        f"{'N':>3} {'runs':>4}  "
        + " ".join(f"{'iter ' + str(i):>15}" for i in range(its + 1))
        + f"  {'% ref':>6} {'wall s':>7} {'LLM calls':>9} {'tokens':>8}"
    )
    lines = [
        f"study on {study['kernel']}: best GFLOP/s after each iteration, mean ± sd over repeats",
        head,
        "-" * len(head),
    ]
    for row in study["per_n"]:
        cells = " ".join(f"{s['mean']:>8.2f} ± {s['sd']:<4.1f}" for s in row["best_per_iteration"])
        lines.append(
            f"{row['n']:>3} {len(row['runs']):>4}  {cells}  "
            f"{row['final_pct_of_reference']['mean']:>6.1f} {row['wall_s']['mean']:>7.1f} "
            f"{row['llm_calls']['mean']:>9.1f} {row['tokens']['mean']:>8.0f}"
        )
    runs = [run for row in study["per_n"] for run in row["runs"]]
    lines.append(
        f"{len(runs)} campaigns, {sum(run['wall_s'] for run in runs):.0f} s of Snakemake wall "
        "time in all (wall s: per campaign, mean over repeats)"
    )
    h = study["headline"]
    if h:
        lines.append(
            f"headline: best(N={h['n_high']}) / best(N={h['n_low']}) = {h['ratio']:.2f} "
            "(final best GFLOP/s, mean over repeats)"
        )
    if study["stand_in"]:
        lines.append(STAND_IN_NOTE)
    return "\n".join(lines)


def figure_png(study: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, cost) = plt.subplots(
        1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 2, 2], "wspace": 0.35}
    )
    colours = plt.cm.viridis(
        [k / max(1, len(study["per_n"]) - 1) * 0.85 for k in range(len(study["per_n"]))]
    )
    for colour, row in zip(colours, study["per_n"], strict=True):
        xs = list(range(len(row["best_per_iteration"])))
        mean = [s["mean"] for s in row["best_per_iteration"]]
        left.fill_between(
            xs,
            [s["min"] for s in row["best_per_iteration"]],
            [s["max"] for s in row["best_per_iteration"]],
            color=colour,
            alpha=0.15,
            linewidth=0,
        )
        left.plot(xs, mean, "o-", color=colour, label=f"N = {row['n']}")
        for run in row["runs"]:
            left.plot(xs, run["best_per_iteration"], ".", color=colour, alpha=0.5)
    left.set_xlabel("iteration (0 = baseline)")
    left.set_ylabel("best GFLOP/s (mean, min–max band)")
    left.set_xticks(range(study["iterations"] + 1))
    left.legend(frameon=False)
    ns = [row["n"] for row in study["per_n"]]
    pos = range(len(ns))

    def bars_of_runs(ax: Any, key: str) -> list[dict[str, float]]:
        """One bar per N (the mean of ``key``), each repeat a dot on it."""
        stats = [row[key] for row in study["per_n"]]
        ax.bar(pos, [f["mean"] for f in stats], color=colours, alpha=0.8)
        for k, row in enumerate(study["per_n"]):
            ax.scatter(
                [k] * len(row["runs"]),
                [r[key] for r in row["runs"]],
                color="black",
                s=12,
                zorder=3,
            )
        ax.set_xticks(list(pos), [f"N={n}" for n in ns])
        return stats

    bars_of_runs(right, "final_gflops")
    right.set_ylabel("final best GFLOP/s (bars: mean; dots: repeats)")
    # what the extra PGs cost: wall time per campaign, LLM calls and tokens on the bars
    walls = bars_of_runs(cost, "wall_s")
    for k, row in enumerate(study["per_n"]):
        cost.annotate(
            f"{row['llm_calls']['mean']:.0f} calls\n{row['tokens']['mean'] / 1000:.1f}k tok",
            (k, walls[k]["max"]),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=7.5,
        )
    cost.set_ylabel("campaign wall time, s (mean; dots: repeats)")
    cost.set_ylim(top=max(w["max"] for w in walls) * 1.25)
    for ax in (left, right, cost):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#e5e5e5")
        ax.set_axisbelow(True)
    title = f"{study['kernel']}: more parallel PGs"
    h = study["headline"]
    if h:
        title += f" — best(N={h['n_high']}) / best(N={h['n_low']}) = {h['ratio']:.2f}"
    if study["stand_in"]:
        title += "\n(answers from the scripted model, a stand-in: the pipeline, not an LLM)"
    fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(study_dir: Path, study: dict[str, Any]) -> str:
    write_json(study_dir / "study.json", study, "study")
    text = table(study)
    write_text_atomic(study_dir / "study.md", f"# hpcagents study\n\n```\n{text}\n```\n")
    png = figure_png(study)
    tmp = study_dir / ".study.png.tmp"
    tmp.write_bytes(png)
    tmp.replace(study_dir / "study.png")
    import html

    b64 = base64.b64encode(png).decode()
    write_text_atomic(
        study_dir / "study.html",
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>hpcagents study"
        "</title><style>body{font-family:sans-serif;max-width:1100px;margin:24px auto;"
        "color:#222}pre{background:#f4f4f4;padding:12px;overflow-x:auto}img{max-width:100%}"
        "</style></head><body><h1>hpcagents study: "
        f"{html.escape(study['kernel'])}</h1>"
        f"<img alt='best GFLOP/s per iteration for each N' src='data:image/png;base64,{b64}'>"
        f"<pre>{html.escape(text)}</pre></body></html>",
    )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pgs", default="1,2,4,8", help="numbers of PGs, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="campaigns per N (seeds)")
    parser.add_argument("--kernel", default="dgemm")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1234, help="repeat r uses seed + r")
    parser.add_argument(
        "--bench-size",
        type=int,
        default=None,
        help="override the kernel's bench size (e.g. 256 for a quick study)",
    )
    parser.add_argument("--dir", default=str(RESULTS / "study"), help="the study's directory")
    parser.add_argument("--config", default="config/config.yaml", help="base campaign config")
    parser.add_argument(
        "--llm",
        choices=("scripted", "config"),
        default="scripted",
        help="scripted: the stochastic scripted model (a stand-in); config: the config's servers",
    )
    parser.add_argument("--latency", type=float, default=0.05, help="scripted model latency (s)")
    parser.add_argument("--cores", help="Snakemake's --cores (default: the profile's job cap)")


def run_study(args: argparse.Namespace) -> int:
    pgs = parse_pgs(args.pgs)
    if args.repeats < 1 or args.iterations < 1:
        raise RunnerError("--repeats and --iterations must be at least 1")
    study_dir = Path(args.dir).resolve()
    base = load_base_config(args.config)
    exit_on_sigterm()
    server: ScriptedModelProcess | None = None
    if args.llm == "scripted":
        server = ScriptedModelProcess(study_dir / ".scripted", args.latency, stochastic=True)
        server.start()
        print(
            f"[study] scripted model (stochastic; a STAND-IN for an LLM) at {server.url}, "
            f"instance {server.instance}",
            flush=True,
        )
    start = time.monotonic()
    try:
        for r in range(args.repeats):
            for n in pgs:
                run_one(study_dir, args, base, n, r, server.url if server else None)
    finally:
        if server is not None:
            server.stop()
    study = aggregate(study_dir, args.kernel, pgs, args.repeats, args.iterations)
    text = write_outputs(study_dir, study)
    print(text)
    print(
        f"[study] {time.monotonic() - start:.0f} s for this invocation; "
        f"{study_dir / 'study.png'}, {study_dir / 'study.md'}, {study_dir / 'study.html'}"
    )
    return 0
