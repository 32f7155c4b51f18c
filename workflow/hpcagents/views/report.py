"""A self-contained HTML report of a campaign: tables from summary.json, plots from matplotlib.

People would rather look than read. The page shows, per kernel: best GFLOP/s and % of the
reference per iteration, every attempt as a point coloured by its status (repairs
marked), the strategies and the winner of every iteration, tokens and latency per
server, a timeline of LLM calls and evaluations per PG and per server (parallelism and
idle gaps), and the campaign's provenance. The page needs no network: the plots are PNG
images embedded as ``data:`` URIs, the style sheet is inline, there is no script.

Every figure in the tables is taken from ``summary.json`` (and carries its exact value in
a ``data-value`` attribute, so a test can compare the page with the file); the plots
that need more than the summary (attempts, timeline, latencies) read the campaign's own
artifacts. The reader is tolerant: an older campaign without timestamps, or a newer one
with fields this module does not know, still renders; what is missing says so.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG in memory
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from hpcagents.campaign.reader import read_kernel  # noqa: E402
from hpcagents.core.artifacts import write_text_atomic  # noqa: E402
from hpcagents.core.layout import CampaignLayout  # noqa: E402
from hpcagents.judge.hostload import reference_name  # noqa: E402

#: Colours of evaluation statuses: green passes, warm colours for wrong code, greys for
#: answers that never became code. Unknown statuses get a fallback colour.
STATUS_COLOURS = {
    "ok": "#2e9d4a",
    "wrong_answer": "#e8891c",
    "data_race": "#c51b7d",
    "compile_error": "#d62728",
    "link_error": "#b2182b",
    "forbidden_code": "#8c564b",
    "forbidden_symbol": "#6b3e2e",
    "forbidden_syscall": "#4a2a1e",
    "tampering": "#17becf",
    "crash": "#222222",
    "timeout": "#7f7f7f",
    "harness_error": "#bcbd22",
    "no_code": "#9467bd",
    "truncated": "#c5b0d5",
    "generation_error": "#e377c2",
}
SERVER_COLOURS = ["#1f77b4", "#17becf", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
DPI = 110


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _iso_to_unix(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Attempt:
    """One attempt of one PG, from its generation.json and evaluation.json."""

    iteration: int
    pg: int
    attempt: int
    kind: str
    strategy: str
    status: str
    reason: str
    gflops: float | None
    pct_of_reference: float | None
    pct_of_roofline: float | None
    eval_start: float | None
    eval_wall_s: float | None
    provenance: dict[str, Any]


@dataclass
class Call:
    """One LLM request with its place in the campaign."""

    lane: str  # "PM" or "PG j"
    iteration: int
    what: str  # plan | generate | repair
    server: str
    start: float | None
    end: float | None
    latency_s: float
    cached: bool
    tokens: int


@dataclass
class Campaign:
    kernel: str
    kernel_dir: Path
    summary: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    plans: dict[int, dict[str, Any]] = field(default_factory=dict)
    bests: dict[int, dict[str, Any]] = field(default_factory=dict)


def _call(rec: dict[str, Any], lane: str, iteration: int, what: str) -> Call:
    start, end = _num(rec.get("started_at")), _num(rec.get("ended_at"))
    return Call(
        lane=lane,
        iteration=iteration,
        what=what,
        server=str(rec.get("server", "?")),
        start=start if start else None,  # 0 means unknown
        end=end if end else None,
        latency_s=_num(rec.get("latency_s")) or 0.0,
        cached=bool(rec.get("cached")),
        tokens=int(rec.get("prompt_tokens", 0) or 0) + int(rec.get("completion_tokens", 0) or 0),
    )


def load_campaign(kernel_dir: Path) -> Campaign:
    """Everything the report shows about one kernel's campaign directory."""
    kernel_dir = Path(kernel_dir)
    run = read_kernel(kernel_dir)
    summary = run.summary
    if summary is None:
        raise FileNotFoundError(
            f"{run.layout.summary()} is missing or unreadable: the report is drawn "
            "from a finished campaign's summary (run the campaign, or `snakemake` to finish it)"
        )
    camp = Campaign(str(summary.get("kernel", kernel_dir.name)), kernel_dir, summary)
    for it in run.iterations:
        i, plan = it.iteration, it.plan
        if plan:
            camp.plans[i] = plan
            for rec in plan.get("llm_calls") or []:
                camp.calls.append(_call(rec, "PM", i, "plan"))
        if it.best:
            camp.bests[i] = it.best
        for att in it.attempts():
            gen = att.generation or {}
            ev = att.evaluation
            pg, a = att.pg, att.attempt
            kind = str(gen.get("kind", "baseline" if i == 0 else "generate"))
            if gen.get("llm"):
                camp.calls.append(_call(gen["llm"], f"PG {pg}", i, kind))
            if ev is None:
                continue
            timing = ev.get("timing") or {}
            prov = ev.get("provenance") or {}
            camp.attempts.append(
                Attempt(
                    iteration=i,
                    pg=pg,
                    attempt=a,
                    kind=kind,
                    strategy=str(gen.get("strategy", "")),
                    status=str(ev.get("status", "?")),
                    reason=str(ev.get("reason", "")),
                    gflops=_num(timing.get("gflops")),
                    pct_of_reference=_num(ev.get("pct_of_reference")),
                    pct_of_roofline=_num(ev.get("pct_of_roofline")),
                    eval_start=_iso_to_unix(prov.get("started_at")),
                    eval_wall_s=_num(prov.get("wall_s")),
                    provenance=prov,
                )
            )
    return camp


# --------------------------------------------------------------------------- plots


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _style(ax: plt.Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _blas(summary: dict[str, Any]) -> str:
    """The reference named as it is: MKL, OpenBLAS, or the user's file (reference.c)."""
    build = summary.get("build") or {}
    ref = build.get("reference")
    if ref and not str(ref).startswith("the reference "):
        return reference_name(str(ref))
    if ref:  # an older summary: "the reference <file>"
        return str(ref)[len("the reference ") :]
    return reference_name(build.get("blas"))


def plot_progress(summary: dict[str, Any]) -> str:
    """Best GFLOP/s per iteration (left axis) and % of the reference (labels)."""
    rows = summary.get("rows") or []
    xs = [r["iteration"] for r in rows]
    ys = [r["gflops"] for r in rows]
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    ax.step(xs, ys, where="post", color="#1f77b4", alpha=0.35, linewidth=1.5)
    ax.plot(xs, ys, "o", color="#1f77b4", markersize=7, zorder=3)
    for r in rows:
        label = f"{r['gflops']:.2f}\n{r['pct_of_reference']:.1f}% of {_blas(summary)}"
        if _num(r.get("pct_of_roofline")) is not None:
            label += f"\n{r['pct_of_roofline']:.1f}% of roofline"
        ax.annotate(
            label,
            (r["iteration"], r["gflops"]),
            textcoords="offset points",
            xytext=(0, 9),
            ha="center",
            fontsize=8,
            color="#333333",
        )
    positive = [y for y in ys if y > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xlabel("iteration (0 = baseline)")
    ax.set_ylabel("best GFLOP/s (selected)")
    ax.set_ylim(top=ax.get_ylim()[1] * (3 if ax.get_yscale() == "log" else 1.25))
    ax.margins(x=0.08)
    _style(ax)
    return _png(fig)


def plot_candidates(camp: Campaign) -> str:
    """Every attempt as a point: GFLOP/s if it passed, a strip of failures below."""
    atts = camp.attempts
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(7.2, 4.4),
        sharex=True,
        gridspec_kw={"height_ratios": [4, 1.3], "hspace": 0.08},
    )
    width = 0.7
    max_pg = max([a.pg for a in atts] + [1])
    failed_statuses = sorted({a.status for a in atts if a.gflops is None})

    def x_of(a: Attempt) -> float:
        if a.iteration == 0:
            return 0.0
        return a.iteration - width / 2 + width * (a.pg - 0.5) / max_pg + 0.04 * a.attempt

    for a in atts:
        colour = STATUS_COLOURS.get(a.status, "#17becf")
        marker = "D" if a.attempt > 0 else "o"
        edge = "black" if a.attempt > 0 else "white"
        if a.gflops is not None:
            top.scatter(x_of(a), a.gflops, s=46, c=colour, marker=marker, edgecolors=edge, zorder=3)
        else:
            y = failed_statuses.index(a.status)
            bottom.scatter(x_of(a), y, s=46, c=colour, marker=marker, edgecolors=edge, zorder=3)
    rows = camp.summary.get("rows") or []
    for r in rows:  # the kernel selected after each iteration, across its PGs' points
        top.hlines(
            r["gflops"],
            r["iteration"] - 0.45,
            r["iteration"] + 0.45,
            color="#1f77b4",
            alpha=0.5,
            linewidth=1.5,
            zorder=2,
        )
    oks = [a.gflops for a in atts if a.gflops]
    if oks and max(oks) / min(oks) > 20:
        top.set_yscale("log")
    top.set_ylabel("GFLOP/s (attempts that passed)")
    _style(top)
    bottom.set_yticks(range(len(failed_statuses)), failed_statuses, fontsize=8)
    bottom.set_ylim(-0.7, max(len(failed_statuses), 1) - 0.3)
    bottom.set_xlabel("iteration (points within an iteration: PG 1..N, left to right)")
    bottom.spines[["top", "right"]].set_visible(False)
    if not failed_statuses:
        bottom.text(
            0.5, 0.5, "no failed attempt", transform=bottom.transAxes, ha="center", va="center"
        )
        bottom.set_yticks([])
    its = sorted({a.iteration for a in atts})
    bottom.set_xticks(its)
    present = sorted({a.status for a in atts}, key=lambda s: (s != "ok", s))
    handles = [
        Line2D([], [], marker="o", linestyle="", color=STATUS_COLOURS.get(s, "#17becf"), label=s)
        for s in present
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="D",
            linestyle="",
            color="#cccccc",
            markeredgecolor="black",
            label="repair (attempt > 0)",
        )
    )
    if rows:
        handles.append(Line2D([], [], color="#1f77b4", alpha=0.4, label="selected best"))
    top.legend(handles=handles, fontsize=8, loc="upper left", frameon=False, ncol=2)
    top.set_ylim(top=top.get_ylim()[1] * (4 if top.get_yscale() == "log" else 1.3))
    return _png(fig)


def plot_servers(summary: dict[str, Any], calls: list[Call]) -> str:
    """Tokens per server (from summary.json) and the latency of each answered request."""
    per = (summary.get("totals") or {}).get("per_server") or {}
    names = sorted(per) or sorted({c.server for c in calls})
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.0), gridspec_kw={"wspace": 0.35})
    bottoms = [0.0] * len(names)
    for key, colour in (
        ("prompt_tokens", "#9ecae1"),
        ("completion_tokens", "#3182bd"),
        ("reasoning_tokens", "#08519c"),
    ):
        vals = [float((per.get(n) or {}).get(key, 0)) for n in names]
        if any(vals) or key != "reasoning_tokens":
            left.bar(names, vals, bottom=bottoms, color=colour, label=key.replace("_", " "))
            bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    left.set_ylabel("tokens")
    left.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    left.set_title("tokens per server", fontsize=9)
    _style(left)
    data = [[c.latency_s for c in calls if c.server == n and not c.cached] for n in names]
    if any(data):
        right.boxplot([d or [0.0] for d in data], tick_labels=names, widths=0.5, showfliers=True)
        for k, d in enumerate(data, start=1):
            right.scatter([k] * len(d), d, s=10, alpha=0.5, color="#3182bd", zorder=3)
    else:
        right.text(
            0.5,
            0.5,
            "every answer came from the cache",
            ha="center",
            va="center",
            transform=right.transAxes,
            fontsize=8,
        )
    right.set_ylabel("latency per request (s)")
    right.set_title("latency (answered requests)", fontsize=9)
    _style(right)
    return _png(fig)


@dataclass
class Timeline:
    """The spans the timeline draws, in seconds since the campaign's first recorded event."""

    t0: float
    calls: list[tuple[Call, float, float]]
    evals: list[tuple[Attempt, float, float]]
    idle: list[tuple[float, float]]
    span_s: float


def timeline(camp: Campaign) -> Timeline | None:
    """Spans of LLM calls and evaluations, and the idle gaps where neither ran."""
    calls = [c for c in camp.calls if c.start and c.end and c.end >= c.start]
    evals = [a for a in camp.attempts if a.eval_start and a.eval_wall_s is not None]
    starts = [c.start for c in calls] + [a.eval_start for a in evals]
    if not starts:
        return None
    t0 = min(s for s in starts if s is not None)
    call_spans = [(c, c.start - t0, c.end - t0) for c in calls]  # type: ignore[operator]
    eval_spans = [(a, a.eval_start - t0, a.eval_start - t0 + a.eval_wall_s) for a in evals]  # type: ignore[operator]
    spans = sorted([(s, e) for _, s, e in call_spans] + [(s, e) for _, s, e in eval_spans])
    idle: list[tuple[float, float]] = []
    covered = spans[0][1]
    for s, e in spans[1:]:
        if s > covered:
            idle.append((covered, s))
        covered = max(covered, e)
    return Timeline(t0, call_spans, eval_spans, idle, covered)


def plot_timeline(camp: Campaign, tl: Timeline, servers: list[str]) -> str:
    """Gantt chart per PG (LLM calls + evaluations) and requests in flight per server."""
    lanes = ["PM"] + sorted(
        {c.lane for c, _, _ in tl.calls if c.lane != "PM"} | {f"PG {a.pg}" for a, _, _ in tl.evals},
        key=lambda s: int(s.split()[1]),
    )
    lanes = [("baseline" if lane == "PG 0" else lane) for lane in lanes]
    fig, (gantt, load) = plt.subplots(
        2,
        1,
        figsize=(9.0, 1.2 + 0.42 * len(lanes) + 1.6),
        sharex=True,
        gridspec_kw={"height_ratios": [0.42 * len(lanes) + 0.4, 1.6], "hspace": 0.12},
    )
    y_of = {lane: len(lanes) - 1 - k for k, lane in enumerate(lanes)}
    colour_of = {s: SERVER_COLOURS[k % len(SERVER_COLOURS)] for k, s in enumerate(servers)}
    for s, e in tl.idle:
        for ax in (gantt, load):
            ax.axvspan(s, e, color="#fde0dd", zorder=0, linewidth=0)
    for c, s, e in tl.calls:
        lane = "baseline" if c.lane == "PG 0" else c.lane
        gantt.broken_barh(
            [(s, max(e - s, 0.02))],
            (y_of[lane] + 0.08, 0.38),
            facecolors=colour_of.get(c.server, "#1f77b4"),
            alpha=0.35 if c.cached else 0.95,
            hatch="//" if c.what == "repair" else None,
            edgecolor="white",
        )
    for a, s, e in tl.evals:
        lane = "baseline" if a.pg == 0 else f"PG {a.pg}"
        gantt.broken_barh(
            [(s, max(e - s, 0.02))],
            (y_of[lane] - 0.46, 0.38),
            facecolors=STATUS_COLOURS.get(a.status, "#17becf"),
            edgecolor="white",
        )
    starts = sorted({c.iteration: s for c, s, _ in reversed(tl.calls) if c.lane == "PM"}.items())
    for i, s in starts:
        gantt.axvline(s, color="#999999", linestyle=":", linewidth=1)
        gantt.text(s, len(lanes) - 0.35, f" iter {i}", fontsize=7, color="#666666", va="bottom")
    gantt.set_yticks([y_of[lane] for lane in lanes], lanes, fontsize=8)
    gantt.set_ylim(-0.6, len(lanes) - 0.1)
    gantt.spines[["top", "right"]].set_visible(False)
    handles = [Patch(color=colour_of[s], label=f"LLM call: {s}") for s in servers]
    handles.append(Patch(facecolor="#cccccc", hatch="//", label="repair request"))
    for st in sorted({a.status for a, _, _ in tl.evals}, key=lambda s: (s != "ok", s)):
        handles.append(Patch(color=STATUS_COLOURS.get(st, "#17becf"), label=f"evaluation: {st}"))
    handles.append(Patch(color="#fde0dd", label="idle: nothing running"))
    gantt.legend(
        handles=handles,
        fontsize=7,
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    # requests in flight per server, and evaluations in flight
    for name in servers:
        _step_count(
            load,
            [(s, e) for c, s, e in tl.calls if c.server == name and not c.cached],
            colour_of[name],
            f"{name}: requests in flight",
        )
    _step_count(load, [(s, e) for _, s, e in tl.evals], "#2e9d4a", "evaluations in flight")
    load.set_ylabel("in flight", fontsize=8)
    load.set_xlabel("seconds since the campaign's first recorded event")
    load.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _style(load)
    load.yaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def _step_count(ax: plt.Axes, spans: list[tuple[float, float]], colour: str, label: str) -> None:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    if not events:
        return
    xs, ys, n = [0.0], [0], 0
    for t, d in events:
        n += d
        xs.append(t)
        ys.append(n)
    ax.step(xs, ys, where="post", color=colour, label=label, linewidth=1.4)


# --------------------------------------------------------------------------- html

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
 color:#222;background:#f6f7f9}
main{max-width:1060px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:34px 0 10px;
 border-bottom:1px solid #dde;padding-bottom:4px} h3{font-size:15px;margin:20px 0 6px}
.sub{color:#667;margin:0 0 18px}
.doubt{background:#fde8e8;border:1px solid #e49b9b;border-radius:6px;padding:10px 14px;
margin:10px 0}
.standin{background:#fff4d6;border:1px solid #f0c36d;border-radius:6px;padding:10px 14px;
 margin:14px 0}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #e2e4ea;border-radius:8px;padding:10px 16px;
 min-width:150px}
.card .v{font-size:22px;font-weight:600} .card .l{font-size:12px;color:#667}
figure{background:#fff;border:1px solid #e2e4ea;border-radius:8px;margin:12px 0;
 padding:10px} figure img{max-width:100%;display:block;margin:0 auto}
figcaption{font-size:12.5px;color:#555;margin-top:6px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:8px 0;width:100%}
th,td{border:1px solid #e2e4ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f5;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.win td{background:#eaf6ec} .muted{color:#889} code{font-size:12px}
.st{display:inline-block;padding:0 6px;border-radius:4px;color:#fff;font-size:11.5px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any, field: str, fmt: str = "") -> str:
    """A table cell holding one figure of summary.json: shown formatted, exact in data-value."""
    if value is None:
        return '<td class="n muted">–</td>'
    if isinstance(value, bool):
        shown = "yes" if value else "no"
        return f'<td data-field="{field}" data-value="{str(value).lower()}">{shown}</td>'
    if isinstance(value, int | float):
        shown = format(value, fmt) if fmt else str(value)
        return f'<td class="n" data-field="{field}" data-value="{value!r}">{shown}</td>'
    return f'<td data-field="{field}" data-value="{_e(value)}">{_e(value)}</td>'


def _status(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#17becf")
    return f'<span class="st" style="background:{colour}">{_e(status)}</span>'


def _figure(png: str, name: str, caption: str) -> str:
    return (
        f'<figure data-figure="{name}"><img alt="{_e(caption)}" '
        f'src="data:image/png;base64,{png}"><figcaption>{caption}</figcaption></figure>'
    )


#: Optional per-iteration columns, shown when summary.json carries them:
#: (key, heading, format).
OPTIONAL_ROW_COLUMNS = (
    ("gbps", "GB/s (memory-bound)", ".2f"),
    ("pct_of_roofline", "% of roofline", ".1f"),
    ("wall_s", "wall s", ".1f"),
    ("critical_path_s", "critical path s", ".1f"),
    ("wall_over_critical", "wall / critical", ".2f"),
    ("llm_inflight_max", "LLM in flight max", ""),
    ("llm_inflight_mean", "LLM in flight mean", ".2f"),
)
SERVER_COLUMNS = (
    ("calls", "calls", ".0f"),
    ("cached_calls", "cached", ".0f"),
    ("prompt_tokens", "prompt tokens", ".0f"),
    ("completion_tokens", "completion tokens", ".0f"),
    ("reasoning_tokens", "reasoning tokens", ".0f"),
    ("estimated_token_calls", "calls with estimated tokens", ".0f"),
    ("answer_s", "answering s", ".1f"),
    ("lost_s", "lost to faults s", ".1f"),
    ("tries", "tries", ".0f"),
    ("failed_tries", "failed tries", ".0f"),
    ("failovers_in", "failovers in", ".0f"),
    ("failovers_out", "failovers out", ".0f"),
)


def stand_in(summary: dict[str, Any]) -> bool:
    return any(s.get("stand_in") for s in summary.get("llm_servers") or [])


def _iteration_table(summary: dict[str, Any]) -> str:
    rows = summary.get("rows") or []
    extra = [c for c in OPTIONAL_ROW_COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    head = (
        "<tr><th>iter</th><th>best GFLOP/s</th><th>% of "
        f"{_e(_blas(summary))}</th>"
        + "".join(f"<th>{_e(h)}</th>" for _, h, _ in extra)
        + "<th>winner</th><th>changed</th><th>valid / candidates</th><th>attempts</th>"
        "<th>repairs ok / all</th><th>LLM calls</th><th>tokens</th><th>plan</th><th>doubt</th></tr>"
    )
    body = []
    for r in rows:
        cells = [
            _cell(r["iteration"], "iteration"),
            _cell(r["gflops"], "gflops", ".2f"),
            _cell(r["pct_of_reference"], "pct_of_reference", ".1f"),
            *[_cell(r.get(k), k, f) for k, _, f in extra],
            f'<td data-field="winner_strategy" data-value="{_e(r["winner_strategy"])}">'
            f"pg{_e(r['winner_pg'])} <b>{_e(r['winner_strategy'])}</b>"
            + (
                f" <span class='muted'>(from iter {_e(r['winner_iteration'])})</span>"
                if r.get("winner_iteration", r["iteration"]) != r["iteration"]
                else ""
            )
            + "</td>",
            _cell(r["changed"], "changed"),
            f'<td class="n">{r["valid"]} / {r["candidates"]}</td>',
            _cell(r["attempts"], "attempts"),
            f'<td class="n">{r["repairs_succeeded"]} / {r["repairs"]}</td>',
            _cell(r["llm_calls"], "llm_calls"),
            _cell(r["tokens"], "tokens"),
            _cell(r["plan_origin"], "plan_origin"),
            f'<td class="doubt-cell">{"; ".join(_e(w) for w in r.get("doubt") or [])}</td>',
        ]
        body.append(f'<tr data-row="{r["iteration"]}">' + "".join(cells) + "</tr>")
    return f'<table data-table="iterations">{head}{"".join(body)}</table>'


def _strategies(camp: Campaign) -> str:
    """Per iteration: each PG's strategy, its attempts' statuses, its figure; winner marked."""
    out = []
    for i, best in sorted(camp.bests.items()):
        if i == 0:
            continue
        plan = camp.plans.get(i) or {}
        desc = {s.get("name"): s.get("description", "") for s in plan.get("strategies") or []}
        sel = best.get("selected") or {}
        rows = []
        for c in best.get("candidates") or []:
            win = best.get("changed") and c.get("pg") == sel.get("pg") and sel.get("iteration") == i
            statuses = c.get("attempt_statuses") or [c.get("status", "?")]
            gf = _num(c.get("gflops"))
            pct = _num(c.get("pct_of_reference"))
            rows.append(
                f'<tr class="{"win" if win else ""}"><td>pg{_e(c.get("pg"))}</td>'
                f"<td><b>{_e(c.get('strategy', ''))}</b><br><span class='muted'>"
                f"{_e(desc.get(c.get('strategy'), ''))}</span></td>"
                f"<td>{' → '.join(_status(s) for s in statuses)}</td>"
                f'<td class="n">{"" if gf is None else f"{gf:.2f}"}</td>'
                f'<td class="n">{"" if pct is None else f"{pct:.1f}"}</td></tr>'
            )
        out.append(
            f"<h3>Iteration {i}{' (plan: ' + _e(plan.get('origin')) + ')' if plan else ''}</h3>"
            f"<p class='muted'>{_e(best.get('reason', ''))}</p>"
            "<table><tr><th>PG</th><th>strategy</th><th>attempts</th><th>GFLOP/s</th>"
            f"<th>% of {_e(_blas(camp.summary))}</th></tr>{''.join(rows)}</table>"
        )
    return "".join(out)


def _final_rounds(camp: Campaign) -> str:
    """Per iteration, how the final round decided: rounds used (of the most allowed), the
    outcome and whether it was certain, challenger against incumbent side by side, the
    paired statistic and the decision's reason, as select wrote them in best.json."""
    rows = []
    for i, best in sorted(camp.bests.items()):
        d = best.get("decision") or {}
        if i == 0 or d.get("decided_by") != "final_round":
            continue
        ch, inc = d.get("challenger") or {}, d.get("incumbent") or {}
        gf_ch, gf_inc = _num(ch.get("gflops")), _num(inc.get("gflops"))
        ratio, p = _num(d.get("median_ratio")), _num(d.get("p_value"))
        rounds = f"{d.get('rounds_used', '')}"
        certain = d.get("certain")
        rows.append(
            f'<tr data-round="{i}"><td class="n">{i}</td>'
            f'<td class="n" data-field="rounds_used">{_e(rounds)}</td>'
            f"<td>{_e(d.get('outcome', 'not timed'))}"
            f"{'' if certain is None else (' (certain)' if certain else ' (uncertain)')}</td>"
            f"<td>{_e(ch.get('label', ''))}</td>"
            f'<td class="n">{"" if gf_ch is None else f"{gf_ch:.2f}"}</td>'
            f'<td class="n">{"" if gf_inc is None else f"{gf_inc:.2f}"}</td>'
            f'<td class="n">{"" if ratio is None else f"{ratio:.3f}"}</td>'
            f'<td class="n">{_e(d.get("wins", ""))}</td>'
            f'<td class="n">{"" if p is None else f"{p:.3g}"}</td>'
            f'<td data-field="scale_check">{_e(_scale_cell(d.get("scale_check")))}</td>'
            f"<td>{_e(best.get('reason', ''))}</td></tr>"
        )
    if not rows:
        return "<p class='muted'>No final round was timed in this campaign.</p>"
    return (
        '<table data-table="final-rounds"><tr><th>iteration</th><th>rounds</th>'
        "<th>verdict</th><th>challenger</th><th>challenger GFLOP/s</th>"
        "<th>incumbent GFLOP/s</th><th>median time ratio</th><th>rounds won</th>"
        "<th>sign test p</th><th>at 2x size</th><th>decision</th></tr>" + "".join(rows) + "</table>"
    )


def _scale_cell(sc: dict[str, Any] | None) -> str:
    """The scale check in a few words: its outcome and the challenger's % there."""
    if not sc:
        return ""
    words = str(sc.get("outcome", "")).replace("_", " ")
    pct, before = _num(sc.get("pct_of_reference")), _num(sc.get("pct_at_bench"))
    if pct is not None and before is not None:
        words += f": {pct:.1f}% of the reference (bench {before:.1f}%)"
    return words


def _server_table(summary: dict[str, Any]) -> str:
    per = (summary.get("totals") or {}).get("per_server") or {}
    cols = [c for c in SERVER_COLUMNS if any(c[0] in v for v in per.values())]
    head = "<tr><th>server</th>" + "".join(f"<th>{_e(h)}</th>" for _, h, _ in cols) + "</tr>"
    body = "".join(
        f'<tr data-server="{_e(name)}"><td>{_e(name)}</td>'
        + "".join(_cell(v.get(k), k, f) for k, _, f in cols)
        + "</tr>"
        for name, v in sorted(per.items())
    )
    return f'<table data-table="servers">{head}{body}</table>'


def _provenance(camp: Campaign) -> str:
    s = camp.summary
    build = s.get("build") or {}
    provs = [a.provenance for a in camp.attempts if a.provenance]
    # what ran the timed kernels: a failed attempt records no threads and an unused BLAS
    ran = [a.provenance for a in camp.attempts if a.provenance and a.status == "ok"] or provs
    first = ran[0] if ran else {}

    def distinct(key: str) -> str:
        vals = sorted({str(p.get(key)) for p in ran if p.get(key) not in (None, "")})
        return ", ".join(vals) if vals else "–"

    sandboxes = sorted(
        {str((p.get("sandbox") or {}).get("kind")) for p in provs if p.get("sandbox")}
    )
    jobs = sum(1 for p in provs if p.get("slurm_job_id"))
    last = camp.bests[max(camp.bests)] if camp.bests else {}
    bench = (last.get("selected") or {}).get("bench")
    rows = [
        (
            "LLM servers",
            "<br>".join(
                f"<b>{_e(v.get('name'))}</b>: model <code>{_e(v.get('model'))}</code> at "
                f"<code>{_e(v.get('base_url'))}</code>"
                + (" — <b>stand-in</b> (scripted model, not an LLM)" if v.get("stand_in") else "")
                for v in s.get("llm_servers") or []
            )
            or "–",
        ),
        ("compiler", _e(distinct("compiler")) + f" (<code>{_e(build.get('cc', ''))}</code>)"),
        ("flags", f"<code>{_e(' '.join(build.get('cflags') or first.get('cflags') or []))}</code>"),
        ("reference library", _e(distinct("blas_version")) or _e(build.get("blas"))),
        (
            "CPU",
            f"{_e(distinct('cpu_model'))}; {_e(distinct('cores'))} cores; "
            f"{_e(distinct('omp_threads'))} OpenMP threads",
        ),
        ("hosts", _e(", ".join(sorted({str(p.get("host")) for p in provs})) or "–")),
        ("sandbox", _e(", ".join(sandboxes) or "–")),
        ("Slurm", f"{jobs} of {len(provs)} evaluations ran as Slurm jobs"),
        ("bench case", _e(", ".join(f"{k}={v}" for k, v in (bench or {}).items()) or "–")),
        ("campaign", f"{_e(s.get('iterations'))} iterations × {_e(s.get('pgs'))} PGs"),
    ]
    return (
        '<table data-table="provenance">'
        + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _cards(s: dict[str, Any]) -> str:
    base, final = s["baseline"], s["final"]
    cards = [
        ("baseline GFLOP/s", base["gflops"], "baseline.gflops", ".2f"),
        ("best GFLOP/s", final["gflops"], "final.gflops", ".2f"),
        ("speedup over the baseline", s["speedup"], "speedup", ".2f"),
        (f"% of {_blas(s)}", final["pct_of_reference"], "final.pct_of_reference", ".1f"),
    ]
    if _num(final.get("gbps")) is not None:
        cards.append(("GB/s moved (memory-bound)", final["gbps"], "final.gbps", ".2f"))
    if _num(final.get("pct_of_roofline")) is not None:
        cards.append(("% of roofline", final["pct_of_roofline"], "final.pct_of_roofline", ".1f"))
    t = s.get("totals") or {}
    cards += [
        ("LLM calls (cached)", t.get("llm_calls"), "totals.llm_calls", ""),
        ("repairs ok / all", None, "", ""),
    ]
    out = []
    for label, value, key, fmt in cards:
        if key == "":
            out.append(
                f'<div class="card"><div class="v">{_e(t.get("repairs_succeeded"))} / '
                f'{_e(t.get("repairs"))}</div><div class="l">{_e(label)}</div></div>'
            )
            continue
        shown = format(value, fmt) if fmt else str(value)
        if key == "totals.llm_calls":
            shown += f" ({t.get('cached_calls', 0)})"
        out.append(
            f'<div class="card"><div class="v" data-field="{key}" data-value="{value!r}">'
            f'{_e(shown)}</div><div class="l">{_e(label)}</div></div>'
        )
    return '<div class="cards">' + "".join(out) + "</div>"


def kernel_section(camp: Campaign) -> str:
    s = camp.summary
    servers = [str(v.get("name")) for v in s.get("llm_servers") or []]
    servers += sorted({c.server for c in camp.calls} - set(servers))
    parts = [
        f'<section data-kernel="{_e(camp.kernel)}"><h1>{_e(camp.kernel)}</h1>',
        f"<p class='sub'>{_e(s.get('iterations'))} iterations × {_e(s.get('pgs'))} PGs; "
        f"best kernel: iteration {_e(s['final']['iteration'])}, "
        f"<b>{_e(s['final']['strategy'])}</b> (<code>{_e(s['final']['source'])}</code>)</p>",
    ]
    if stand_in(s):
        parts.append(
            '<div class="standin" data-stand-in="true"><b>Stand-in answers.</b> The LLM '
            "server of this campaign is the project's scripted model, which answers from "
            "hand-written kernel variants: these figures measure the pipeline (compile, "
            "validate, repair, time, select), not a language model.</div>"
        )
    if s.get("warnings"):
        parts.append(
            '<div class="doubt" data-doubt="true"><b>Figures in doubt.</b> Taken on a busy '
            "host, with a wide spread between repeats, or beyond what is plausible: read "
            "them with this in mind.<ul>"
            + "".join(f"<li>{_e(w)}</li>" for w in s["warnings"])
            + "</ul></div>"
        )
    parts.append(_cards(s))
    parts.append("<h2>Progress per iteration</h2>")
    parts.append(
        _figure(
            plot_progress(s),
            "progress",
            f"Best GFLOP/s after each iteration (the selected kernel, timed beside "
            f"{_e(_blas(s))}); labels give the % of the reference.",
        )
    )
    parts.append(_iteration_table(s))
    parts.append("<h2>Every candidate</h2>")
    if camp.attempts:
        parts.append(
            _figure(
                plot_candidates(camp),
                "candidates",
                "Each attempt of each PG: passed attempts at their measured GFLOP/s, failed "
                "ones in the strip below by status. Diamonds with a black edge are repairs.",
            )
        )
    parts.append(_strategies(camp))
    parts.append("<h2>Final rounds: the verdict of each iteration</h2>")
    parts.append(
        "<p class='muted'>The best candidates and the incumbent re-timed side by side in "
        "interleaved rounds (more rounds while the verdict is uncertain); a challenger "
        "replaces the incumbent only when it is faster in significantly many rounds (a "
        "sign test on the per-round time ratios). GFLOP/s are each one's best run.</p>"
    )
    parts.append(_final_rounds(camp))
    parts.append("<h2>LLM servers: tokens and latency</h2>")
    if camp.calls or (s.get("totals") or {}).get("per_server"):
        parts.append(
            _figure(
                plot_servers(s, camp.calls),
                "servers",
                "Tokens per server (summary.json) and the latency of each request a server "
                "answered in this run (cached answers excluded).",
            )
        )
    parts.append(_server_table(s))
    parts.append("<h2>Timeline</h2>")
    tl = timeline(camp)
    if tl is None:
        parts.append(
            "<p class='muted'>No timestamps recorded in this campaign's artifacts (an "
            "older campaign): no timeline.</p>"
        )
    else:
        idle = sum(e - st for st, e in tl.idle)
        parts.append(
            _figure(
                plot_timeline(camp, tl, servers),
                "timeline",
                f"LLM requests (upper bar of a lane, coloured by server, hatched for repairs, "
                f"faded when answered from the cache) and evaluations (lower bar, coloured "
                f"by status) per PG. Below: requests in flight per server and evaluations "
                f"in flight. Shaded: idle gaps, where neither ran "
                f"(<span data-field='idle_s'>{idle:.1f}</span> s of {tl.span_s:.1f} s; "
                f"Snakemake scheduling, job start-up, selection).",
            )
        )
    parts.append("<h2>Provenance</h2>")
    parts.append(_provenance(camp))
    parts.append("</section>")
    return "".join(parts)


def render(kernel_dirs: list[Path], title: str = "hpcagents campaign report") -> str:
    """The HTML page for one or more kernels' campaign directories."""
    camps = [load_campaign(d) for d in kernel_dirs]
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = "".join(kernel_section(c) for c in camps)
    names = ", ".join(c.kernel for c in camps)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}: {_e(names)}</title><style>{CSS}</style></head><body><main>"
        f"<p class='sub'>{_e(title)} · generated {_e(generated)} · figures from "
        "<code>summary.json</code></p>"
        f"{body}</main></body></html>"
    )


def write_report(kernel_dirs: list[Path], out: Path) -> Path:
    write_text_atomic(out, render(kernel_dirs))
    return out


def kernel_dirs_under(results: Path) -> list[Path]:
    """Every kernel directory of a results directory that holds a summary.json."""
    return [k.directory for k in CampaignLayout(Path(results)).finished()]
