"""The PM (plans strategies) and PG (writes one C file) agents.

Prompts are plain-text templates in ``workflow/prompts/`` so users can tune them without
touching code. Both agents treat a bad answer as a value: the PM re-asks with the exact
validation error and, after ``max_reasks``, falls back to the kernel's listed strategies
(recorded as such); the PG's answer without code becomes a failed attempt that the repair
loop feeds back.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from hpcagents.core.artifacts import (
    PROMPT_DIR,
    REPO_DIR,
    ArtifactError,
    load_schema,
    validate,
    write_text_atomic,
)
from hpcagents.judge.machine import cache_label, roofline, topology_label
from hpcagents.llm.extract import extract_code, extract_json
from hpcagents.llm.interface import PromptTooLong, prompt_hash
from hpcagents.llm.pool import LLMPool
from hpcagents.spec.kernelspec import KernelSpec


def host_dirs() -> tuple[str, ...]:
    """This host's directories that no prompt may name: the checkout, the campaign's
    directory (the working directory), the home and temporary directories. Longest first,
    so a campaign folder inside the checkout is replaced whole.

    Only directories two levels deep or more: a one-level name such as ``/tmp`` or
    ``/root`` is also C (``(a + b)/tmp`` divides by a variable named tmp), and the code
    the agents are shown must reach them unchanged."""
    found = {str(REPO_DIR), os.getcwd(), os.path.expanduser("~"), tempfile.gettempdir()}
    dirs = {d.rstrip("/") for d in found if d.rstrip("/").count("/") >= 2}
    return tuple(sorted(dirs, key=len, reverse=True))


def scrub_host_paths(text: str, dirs: Sequence[str] | None = None) -> str:
    """``text`` with every path under one of ``dirs`` (default: :func:`host_dirs`) cut to
    its part below that directory, e.g. ``/home/u/camp/results/x.c`` -> ``results/x.c``.

    Why here: every prompt is filled by :func:`render`, so a host path that some record
    carries (an artifact's ``source``, a description written by a step) cannot reach a
    model whichever section it comes through; a new section needs no check of its own.
    """
    for d in dirs if dirs is not None else host_dirs():
        # a whole path only: "y/tmp" in C is a division by a variable named tmp
        text = re.sub(r"(?<![\w.])" + re.escape(d) + r"/", "", text)
        text = re.sub(r"(?<![\w.])" + re.escape(d) + r"(?![\w.-])", "<a host directory>", text)
    return text


def render(name: str, **values: Any) -> str:
    """Fill ``workflow/prompts/<name>.txt``; a missing value is a bug, so it raises. No
    value carries a path of this host (:func:`scrub_host_paths`)."""
    text = (PROMPT_DIR / f"{name}.txt").read_text()
    dirs = host_dirs()
    return Template(text).substitute({k: scrub_host_paths(str(v), dirs) for k, v in values.items()})


@dataclass(frozen=True)
class BuildInfo:
    """What the agents are told about the machine and the fixed build.

    ``machine`` is the measured machine model (``MachineModel.to_dict()``) of the node
    that times the kernels, or None when it could not be measured there; ``threads`` is
    the OpenMP thread count every evaluation sets (0: unknown).
    """

    cc: str
    cflags: tuple[str, ...]
    cpu_model: str
    cores: int
    threads: int = 0
    machine: Mapping[str, Any] | None = None


def machine_text(build: BuildInfo) -> str:
    """The machine section: CPU, threads, ISA, caches, compiler, measured limits.

    Everything here was measured or read on the node that times the kernels; what is not
    known is left out rather than guessed (a model that assumes AVX2 on a CPU with two
    512-bit FMA units loses half its speed; one told a wrong cache size tiles for the
    wrong cache).
    """
    m = build.machine or {}
    threads = build.threads or int(m.get("threads") or 0)
    cores = int(m.get("cores") or build.cores or 0)
    cpu = m.get("cpu_model") or build.cpu_model
    lines = [f"CPU: {cpu}" + (f", {cores} cores" if cores else "") + "."]
    if threads:
        lines.append(
            f"Threads: the kernel runs with exactly {threads} OpenMP thread(s): "
            f"OMP_NUM_THREADS={threads} is set (OMP_PROC_BIND=close, OMP_PLACES=cores) for "
            "every validation and timed call, and for the reference."
        )
    if m.get("isa"):
        lines.append(f"ISA features of the CPU: {' '.join(m['isa'])}.")
    peak = m.get("peak") or {}
    if m.get("compiler_isa"):
        bits = peak.get("widest_vector_bits") or peak.get("vector_bits")
        widest = f" (widest double vector: {bits} bits = {bits // 64} doubles)" if bits else ""
        lines.append(
            f"The fixed flags let the compiler use: {' '.join(m['compiler_isa'])}{widest}."
        )
    if m.get("caches"):
        lines.append(f"Caches: {', '.join(cache_label(c) for c in m['caches'])}.")
    if m.get("topology"):
        lines.append(topology_label(m["topology"]))
    version = m.get("cc_version")
    lines.append(
        f"Compiler: {build.cc}"
        + (f', version "{version}"' if version else "")
        + f"; flags (fixed, never changed): {' '.join(build.cflags)}"
    )
    if m.get("peak_gflops") and m.get("bandwidth_gbs"):
        ridge = float(m["peak_gflops"]) / float(m["bandwidth_gbs"])
        lines.append(
            f"Measured limits with these flags and {m.get('threads')} thread(s): peak "
            f"{float(m['peak_gflops']):.1f} GFLOP/s in double precision (FMA micro-benchmark), "
            f"memory bandwidth {float(m['bandwidth_gbs']):.1f} GB/s (STREAM triad). A kernel "
            f"below {ridge:.2f} flop/byte is memory-bound, above it compute-bound."
        )
    return "\n".join(lines)


def machine_provenance(build: BuildInfo) -> dict[str, Any] | None:
    """Which measured model the prompt quoted (the cache file's key), for plan.json."""
    m = build.machine
    if not m:
        return None
    return {k: m.get(k) for k in ("host", "key", "measured_at", "peak_gflops", "bandwidth_gbs")}


def spec_facts(kernel: KernelSpec) -> dict[str, Any]:
    """Tolerance, poisoned memory and validation cases, read from the kernel spec.

    The one place that knows the spec's shape. It reads both forms: the parameter list
    (``kernel.tolerance``, ``kernel.parameters`` with ``poison_when``/``ld``/``halo``)
    and the older dgemm-shaped one (``tolerance_factor``, cases with alpha/beta/pad).
    """
    tol = getattr(kernel, "tolerance", None)
    if tol is not None and getattr(tol, "model", "") == "relative":
        tolerance = f"elementwise |out - ref| <= {tol.rtol:g} * |ref| + {tol.atol:g}"
    else:
        factor = getattr(tol, "factor", None) or getattr(kernel, "tolerance_factor", 4)
        terms = getattr(tol, "terms", None)
        tolerance = (
            f"elementwise |out - ref| <= {float(factor):g} x "
            + (f"({terms})" if terms and terms != "1" else "(the number of terms summed)")
            + " x eps x (the reference computed on absolute values): the forward-error "
            "bound of any summation order, so reordering, blocking and FMA pass and "
            "single-precision arithmetic does not"
        )
    poison: list[str] = []
    params = getattr(kernel, "parameters", None)
    cases = list(kernel.cases)
    padded = any(_case_value(c, "pad", 0) for c in cases)
    if params:
        for p in params:
            if getattr(p, "kind", "") != "array":
                continue
            if p.intent == "out":
                poison.append(f"{p.name} holds NaN on entry: write every element, never read it")
            if p.poison_when:
                poison.append(
                    f"{p.name} holds NaN on entry when {p.poison_when}: it must not be read then"
                )
            if p.intent == "in":
                poison.append(f"{p.name} is read-only: it is compared bitwise after every call")
            if p.ld and padded:
                poison.append(
                    f"the padding of {p.name} (from its last extent up to {p.ld}) "
                    + ("holds NaN: never read it" if p.intent == "in" else "must not be written")
                )
            if p.halo and p.intent != "in":
                poison.append(f"the {p.halo}-cell halo of {p.name} must not be written")
        poison.append("a write past the end of any array is detected (a guard zone follows each)")
    else:
        # the spec before the parameter list: dgemm-shaped cases (alpha, beta, pad)
        if any(_case_value(c, "beta", 1) == 0 for c in cases):
            poison.append("the output holds NaN on entry when beta == 0: it must not be read")
        if any(_case_value(c, "alpha", 1) == 0 for c in cases):
            poison.append("the inputs hold NaN when alpha == 0: they must not be read")
        if padded:
            poison.append(
                "the padding of every input (beyond each row, up to its leading dimension) "
                "holds NaN, and the output's padding must not be written"
            )
    return {
        "tolerance": tolerance,
        "poison": poison,
        "cases": [c.label() for c in cases],
    }


def _case_value(case: Any, key: str, default: Any) -> Any:
    """A case's value: cases are mappings in the parameter-list spec, objects before."""
    if hasattr(case, "get"):
        return case.get(key, default)
    return getattr(case, key, default)


def _reference_name(kernel: KernelSpec) -> str:
    ref = kernel.reference
    return str(getattr(ref, "describe", ref))


def rules_text(kernel: KernelSpec) -> str:
    """The rules the evaluation enforces, so a model does not spend a repair learning them."""
    facts = spec_facts(kernel)
    poison = "\n".join(f"  - {p}" for p in facts["poison"]) or "  - (nothing poisoned)"
    return render(
        "rules",
        function=kernel.function,
        tolerance=facts["tolerance"],
        poison=poison,
        cases="; ".join(facts["cases"]),
        reference=_reference_name(kernel),
    ).strip()


def _kernel_values(kernel: KernelSpec, build: BuildInfo) -> dict[str, Any]:
    return {
        "kernel": kernel.name,
        "title": kernel.title,
        "description": kernel.description.strip(),
        "function": kernel.function,
        "signature": " ".join(kernel.signature.split()),
        "constraints": "\n".join(f"- {c}" for c in kernel.constraints),
        "cpu_model": build.cpu_model,
        "cores": build.cores,
        "cc": build.cc,
        "cflags": " ".join(build.cflags),
        "machine": machine_text(build),
        "rules": rules_text(kernel),
    }


def _size_label(bench: Mapping[str, Any]) -> str:
    return (
        " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in bench.items())
        or "the bench size"
    )


def _bench_work(kernel: KernelSpec, selected: Mapping[str, Any]) -> tuple[float, float] | None:
    """Flops and bytes of the incumbent's timed call, from the kernel's expressions.

    Works with a spec whose ``flops``/``bytes`` take the case as a mapping, and with the
    older ones that take m, n, k; None when neither fits what best.json recorded.
    """
    bench = dict(selected.get("bench") or {})
    for call in (lambda f: f(bench), lambda f: f(*(bench[d] for d in ("m", "n", "k")))):
        try:
            return float(call(kernel.flops)), float(call(kernel.bytes))
        except Exception:  # noqa: BLE001 - a spec shape this reader does not know
            continue
    return None


def incumbent_roofline(
    kernel: KernelSpec, selected: Mapping[str, Any], build: BuildInfo
) -> dict[str, Any] | None:
    """The incumbent's roofline record: best.json's own (``roofline``) when it has one,
    else computed from the kernel's flops/bytes and the measured machine model."""
    if selected.get("roofline"):
        return dict(selected["roofline"])
    if not (build.machine and selected.get("best_s")):
        return None
    work = _bench_work(kernel, selected)
    if not work:
        return None
    try:
        return roofline(work[0], work[1], float(selected["best_s"]), build.machine)
    except (ValueError, KeyError, TypeError):
        return None


def roofline_line(kernel: KernelSpec, selected: Mapping[str, Any], build: BuildInfo) -> str:
    """Where the incumbent sits under the roofline, or "" when it is not known."""
    r = incumbent_roofline(kernel, selected, build)
    if r:
        return (
            f"Roofline: arithmetic intensity {r['arithmetic_intensity']:.2f} flop/byte, "
            f"{r['bound']}-bound; attainable {r['attainable_gflops']:.1f} GFLOP/s; the current "
            f"best reaches {r['pct_of_roofline']:.1f}% of it."
        )
    if selected.get("pct_of_roofline") is not None:
        return f"Roofline: the current best reaches {selected['pct_of_roofline']:.1f}% of it."
    return ""


def performance_line(selected: dict[str, Any]) -> str:
    """One line the agents read: GFLOP/s, % of the reference, at which size."""
    size = _size_label(selected.get("bench") or {})
    return (
        f"{selected['gflops']:.2f} GFLOP/s at {size}, "
        f"{selected['pct_of_reference']:.1f}% of the reference "
        f"({selected['reference_gflops']:.2f} GFLOP/s measured in the same run)"
    )


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def history_text(
    history: list[dict[str, Any]], limit: int = 40, attainable_gflops: float | None = None
) -> str:
    """The tried strategies and outcomes, newest last; the oldest are cut past ``limit``.

    Each row says what the strategy was (its description), what it reached, against
    which reference figure (a % alone hides that the reference itself moves between
    runs) and, when known, how close to the roofline: the row's own ``pct_of_roofline``,
    else its GFLOP/s over ``attainable_gflops`` (every row of a campaign is timed at the
    same bench size, so the incumbent's attainable figure holds for all of them).
    """
    if not history:
        return "Nothing yet: this is the first iteration after the baseline."
    lines = []
    cut = max(0, len(history) - limit) if limit > 0 else len(history)
    if cut:
        lines.append(f"({cut} older entries omitted)")
    for h in history[cut:] if limit > 0 else []:
        if h["status"] == "ok":
            outcome = f"valid, {h['gflops']:.2f} GFLOP/s"
            if h.get("pct_of_reference") is not None:
                outcome += f" = {h['pct_of_reference']:.1f}% of the reference"
                if h.get("reference_gflops"):
                    outcome += f" ({h['reference_gflops']:.2f} GFLOP/s in the same run)"
            pct_roof = h.get("pct_of_roofline")
            if pct_roof is None and attainable_gflops:
                pct_roof = 100.0 * h["gflops"] / attainable_gflops
            if pct_roof is not None:
                outcome += f", {pct_roof:.1f}% of the roofline"
            skipped = str(h.get("reason", "")).find("race check skipped:")  # issue 25
            if skipped >= 0:
                outcome += f" ({_one_line(h['reason'][skipped:], 160)})"
        else:
            outcome = f"FAILED ({h['status']}: {_one_line(h['reason'], 160)})"
        what = h["strategy"]
        if h.get("strategy_description"):
            what += f" ({_one_line(h['strategy_description'], 240)})"
        lines.append(
            f"- iteration {h['iteration']}, PG {h['pg']}: {what}: {outcome}; "
            f"{h['attempts']} attempt(s)"
        )
    return "\n".join(lines)


def siblings_text(siblings: Sequence[Mapping[str, str]]) -> str:
    """The other PGs' strategies of this iteration, one line each."""
    if not siblings:
        return "(you are the only programmer in this iteration)"
    return "\n".join(f"- {s['name']}: {_one_line(s.get('description', ''), 200)}" for s in siblings)


#: Elites listed in the PM prompt (archive search), and how many of them (not the
#: incumbent, whose code the prompt carries anyway) come with their code.
ELITES_SHOWN = 5
ELITE_CODE_SHOWN = 2
#: The elites a PG may be shown as inspiration: PG j gets the ((j - 1) mod this)-th best
#: elite that is not the incumbent.
INSPIRATION_POOL = 3


def _read_code(elite: Mapping[str, Any]) -> str | None:
    """An elite's code from its attempt's file, or None when it is gone (never a path)."""
    try:
        return Path(elite["source"]).read_text().rstrip()
    except OSError:
        return None


def _elite_figure(elite: Mapping[str, Any]) -> str:
    side, own = elite.get("side_by_side"), elite.get("own_run") or {}
    if side and side.get("gflops") is not None:
        text = f"{side['gflops']:.2f} GFLOP/s"
        if side.get("pct_of_reference") is not None:
            text += f" = {side['pct_of_reference']:.1f}% of the reference"
        return text + f", side by side in iteration {side.get('iteration')}'s final round"
    if own.get("gflops") is None:
        return "no figure"
    text = f"{own['gflops']:.2f} GFLOP/s"
    if own.get("pct_of_reference") is not None:
        text += f" = {own['pct_of_reference']:.1f}% of the reference"
    return text + " in its own run (not re-timed side by side)"


def _elite_line(elite: Mapping[str, Any], *, incumbent: bool) -> str:
    lineage = []
    if incumbent:
        lineage.append("the current best")
    if elite.get("parent"):
        lineage.append(f"started from {elite['parent']}")
    if elite.get("inspiration"):
        lineage.append(f"inspired by {elite['inspiration']}")
    what = f'{elite["id"]} "{elite["strategy"]}"'
    if lineage:
        what += f" ({'; '.join(lineage)})"
    desc = elite.get("strategy_description")
    text = f"{what}: {_elite_figure(elite)}"
    return text + (f". {_one_line(desc, 200)}" if desc else "")


def last_round_text(last: Mapping[str, Any] | None) -> str:
    """The last final round as the PM reads it: each contender's side-by-side figure (or
    why it has none), and the decision with its reason."""
    if not last:
        return ""
    rounds = last.get("rounds")
    lines = [
        f"## The last final round (iteration {last['iteration']}: the finalists and the "
        f"incumbent re-timed side by side, {rounds} interleaved round(s))"
    ]
    for c in last["contenders"]:
        who = f"{c['label']} ({c.get('id') or '?'}, {c['strategy']})"
        if c["status"] != "ok":
            lines.append(f"- {who}: {c['status']}: {_one_line(c.get('reason', ''), 160)}")
            continue
        text = f"- {who}: {c['gflops']:.2f} GFLOP/s"
        if c.get("pct_of_reference") is not None:
            text += f" = {c['pct_of_reference']:.1f}% of the reference"
        if c.get("median_ratio_to_incumbent") is not None:
            text += (
                f"; time / incumbent's time, median over the rounds: "
                f"{c['median_ratio_to_incumbent']:.3f}"
            )
            if c.get("wins") is not None:
                text += f" (faster by more than 2% in {c['wins']} of {rounds} rounds)"
        lines.append(text)
    kept = "the incumbent was replaced" if last.get("changed") else "the incumbent stayed"
    lines.append(f"Decision ({kept}): {last['reason']}")
    return "\n".join(lines)


def shown_elites(archive: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The elites the PM's list shows, in its order: its numbers (which a plan's
    ``inspiration`` names) index this list, in the prompt and in the check alike."""
    return list(archive["elites"])[:ELITES_SHOWN]


def archive_text(archive: Mapping[str, Any] | None, code_shown: int = ELITE_CODE_SHOWN) -> str:
    """The PM's archive section: the top elites (figures, strategies, lineage), the code of
    the best ``code_shown`` that are not the incumbent, and the last final round.
    Empty for greedy search (no archive), so its prompt stays the seed's, byte for byte."""
    if archive is None:
        return ""
    elites = list(archive["elites"])
    inc = archive.get("incumbent")
    lines = [
        "## The archive: the best kernels the team has found so far",
        "Ranked by % of the reference (side by side in a final round where the kernel met "
        "the incumbent, else in its own run). Ideas from any of them may be combined.",
    ]
    shown = shown_elites(archive)
    for n, e in enumerate(shown, 1):
        lines.append(f"{n}. {_elite_line(e, incumbent=e['id'] == inc)}")
        if e.get("compiler_report"):  # condensed -fopt-info: which loops vectorised
            lines.append("   What the compiler said (vectorisation):")
            lines += [f"   {line}" for line in e["compiler_report"].splitlines()]
    if len(elites) > len(shown):
        lines.append(f"({len(elites) - len(shown)} more valid kernels are archived)")
    coded = 0
    for n, e in enumerate(shown, 1):
        if coded >= code_shown or e["id"] == inc:
            continue
        code = _read_code(e)
        if code is None:
            continue
        lines += [
            "",
            f'### Code of {e["id"]} "{e["strategy"]}" (number {n} above)',
            "```c",
            code,
            "```",
        ]
        coded += 1
    lines += [
        "",
        "A strategy may name the archived kernel its programmer should see beside the current "
        'best (to combine or build on): add "inspiration": its number in the list above to '
        "that strategy's object. Without it, each programmer is shown another elite in turn.",
    ]
    last = last_round_text(archive.get("last_round"))
    return "\n".join(lines) + "\n\n" + (last + "\n\n" if last else "")


def inspiration_for(
    archive: Mapping[str, Any] | None, pg: int, named: str | None = None
) -> dict[str, Any] | None:
    """The elite PG ``pg`` is shown as inspiration (None: greedy search, or no elite but
    the incumbent): the one its strategy names (``named``, the PM's choice, marked so),
    else the ((pg - 1) mod INSPIRATION_POOL)-th best non-incumbent elite."""
    if archive is None:
        return None
    if named:
        chosen = next((e for e in archive["elites"] if e["id"] == named), None)
        if chosen is not None:
            return {**chosen, "named_by_pm": True}
    pool = [e for e in archive["elites"] if e["id"] != archive.get("incumbent")]
    pool = pool[:INSPIRATION_POOL]
    if not pool:
        return None
    return dict(pool[(max(pg, 1) - 1) % len(pool)])


def inspiration_text(elite: Mapping[str, Any] | None) -> str:
    """The PG's inspiration section (empty without one: the seed's prompt, byte for byte)."""
    if not elite:
        return ""
    code = _read_code(elite)
    if code is None:
        return ""
    head = (
        "## The kernel from the team's archive that your strategy builds on (the planner's "
        "choice: take from it, or start from it instead of the current best above)\n"
        if elite.get("named_by_pm")
        else "## Another kernel from the team's archive, for ideas (start from the current "
        "best above, not from this one)\n"
    )
    return head + f"{_elite_line(elite, incumbent=False)}\n```c\n{code}\n```\n\n"


def plan_schema(n: int, archive: bool = False) -> dict[str, Any]:
    """The PM answer schema sent with ``response_format``: exactly ``n`` strategies; with
    the archive, each may name the elite (its number in the prompt's list) its PG sees."""
    schema = copy.deepcopy(load_schema("pm_answer"))
    schema["properties"]["strategies"]["minItems"] = n
    schema["properties"]["strategies"]["maxItems"] = n
    if archive:
        schema["properties"]["strategies"]["items"]["properties"]["inspiration"] = {
            "type": "integer",
            "minimum": 1,
        }
    return schema


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """Conservative token estimate (3 characters a token; code tokenises densely)."""
    return sum(len(m["content"]) for m in messages) // 3 + 8 * len(messages)


def fit_pm(
    kernel: KernelSpec,
    build: BuildInfo,
    iteration: int,
    n: int,
    best: dict[str, Any],
    source: str,
    budget: int | None,
    archive: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """PM messages within ``budget`` prompt tokens: the elites' code, then the oldest
    history go first.

    The rule: keep the current best kernel and the newest history; drop the archived
    elites' code one kernel at a time, then halve the number of history entries until the
    prompt fits (down to none). What was cut is recorded.
    """
    total = len(best.get("history", []))
    limit = 40
    code = ELITE_CODE_SHOWN if archive is not None else 0

    def build_messages() -> list[dict[str, str]]:
        return pm_messages(kernel, build, iteration, n, best, source, limit, archive, code)

    messages = build_messages()
    while budget is not None and estimate_tokens(messages) > budget and (limit > 0 or code):
        if code:
            code -= 1
        else:
            limit //= 2
        messages = build_messages()
    context = {
        "budget_tokens": budget,
        "estimated_tokens": estimate_tokens(messages),
        "history_entries_cut": max(0, total - limit),
        "fits": budget is None or estimate_tokens(messages) <= budget,
        "machine": machine_provenance(build),
    }
    if archive is not None:
        context["elite_code_shown"] = code
    return messages, context


def pm_messages(
    kernel: KernelSpec,
    build: BuildInfo,
    iteration: int,
    n: int,
    best: dict[str, Any],
    source: str,
    history_limit: int = 40,
    archive: Mapping[str, Any] | None = None,
    elite_code_shown: int = ELITE_CODE_SHOWN,
) -> list[dict[str, str]]:
    """The PM's messages; ``archive`` (archive search) adds the elites and the last final
    round, and None (greedy search) renders the seed's prompt exactly."""
    sel = best["selected"]
    roof = incumbent_roofline(kernel, sel, build)
    user = render(
        "pm",
        **_kernel_values(kernel, build),
        iteration=iteration,
        n=n,
        best_iteration=sel["iteration"],
        best_strategy=sel["strategy"],
        best_performance=performance_line(sel),
        best_roofline=roofline_line(kernel, sel, build),
        best_source=source.rstrip(),
        history=history_text(
            best.get("history", []),
            history_limit,
            roof["attainable_gflops"] if roof else None,
        ),
        archive=archive_text(archive, elite_code_shown),
    )
    return [
        {"role": "system", "content": render("pm_system")},
        {"role": "user", "content": user},
    ]


def _snake(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return slug[:60] or "strategy"


def check_plan(
    answer: object, n: int, archive: Mapping[str, Any] | None = None
) -> list[dict[str, str]]:
    """Validate a PM answer; return exactly ``n`` strategies or raise ``ValueError``. With
    the archive, a strategy's ``inspiration`` (a number of the prompt's elite list) becomes
    that elite's id; a number outside the list is an error the PM is asked to correct."""
    try:
        validate(answer, "pm_answer", what="PM answer")
    except ArtifactError as exc:
        raise ValueError(str(exc)) from None
    assert isinstance(answer, dict)
    shown = shown_elites(archive) if archive else []
    strategies = []
    for s in answer["strategies"]:
        entry = {"name": _snake(s["name"]), "description": s["description"].strip()}
        number = s.get("inspiration") if archive else None
        if number is not None:
            if not isinstance(number, int) or not 1 <= number <= len(shown):
                raise ValueError(
                    f"strategy {entry['name']!r}: inspiration {number!r} is not a number of the "
                    f"archive's list (1 to {len(shown)})"
                )
            entry["inspiration"] = shown[number - 1]["id"]
        strategies.append(entry)
    names = [s["name"] for s in strategies]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise ValueError(f"strategy names must be distinct; repeated: {', '.join(dupes)}")
    if len(strategies) < n:
        raise ValueError(f"expected {n} strategies, got {len(strategies)}")
    return strategies[:n]


def run_pm(
    pool: LLMPool,
    kernel: KernelSpec,
    build: BuildInfo,
    iteration: int,
    n: int,
    best: dict[str, Any],
    source: str,
    seed: int,
    max_reasks: int,
    budget: int | None = None,
    archive: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Ask the PM for ``n`` strategies; return the plan.json record. ``archive``: the
    archive search's elites (None: greedy, the seed's prompt)."""
    messages, context = fit_pm(kernel, build, iteration, n, best, source, budget, archive)
    calls: list[dict[str, Any]] = []
    errors: list[str] = []
    for ask in range(max_reasks + 1):
        try:
            result = pool.chat(
                messages,
                index=iteration,
                seed=seed + ask,
                json_schema=plan_schema(n, archive is not None),
                role="pm",
            )
        except PromptTooLong as exc:  # no server can take it: re-asking cannot help
            errors.append(str(exc))
            break
        calls.append({**result.record(), "prompt_sha256": prompt_hash(messages)})
        try:
            strategies = check_plan(extract_json(result.text), n, archive)
        except ValueError as exc:
            errors.append(str(exc))
            messages = messages + [
                {"role": "assistant", "content": result.text},
                {
                    "role": "user",
                    "content": (
                        f"Your answer could not be used: {exc}. Answer again with only the JSON "
                        f'object {{"strategies": [...]}} holding exactly {n} entries with '
                        f"distinct names."
                    ),
                },
            ]
            continue
        return _plan_record(kernel, iteration, n, best, strategies, "llm", calls, errors, context)
    fallback = [dict(s) for s in kernel.fallback_strategies]
    strategies = [fallback[j % len(fallback)] for j in range(n)]
    for j, s in enumerate(strategies):
        if j >= len(fallback):
            s["name"] = f"{s['name']}_{j // len(fallback) + 1}"
    return _plan_record(kernel, iteration, n, best, strategies, "fallback", calls, errors, context)


def _plan_record(
    kernel: KernelSpec,
    iteration: int,
    n: int,
    best: dict[str, Any],
    strategies: list[dict[str, str]],
    origin: str,
    calls: list[dict[str, Any]],
    errors: list[str],
    context: dict[str, Any],
) -> dict[str, Any]:
    sel = best["selected"]
    return {
        "kernel": kernel.name,
        "iteration": iteration,
        "n": n,
        "origin": origin,
        "based_on": {k: sel[k] for k in ("iteration", "pg", "attempt", "strategy")},
        "strategies": strategies,
        "reasks": max(0, len(calls) - 1),
        "errors": errors,
        "llm_calls": calls,
        "context": context,
    }


@dataclass(frozen=True)
class Previous:
    """A failed attempt the PG must repair: its source and the exact error."""

    status: str
    error: str
    source: str
    # [feedback] what the compiler and the machine said about it (hpcagents.campaign.feedback)
    feedback: str = ""


def pg_messages(
    kernel: KernelSpec,
    build: BuildInfo,
    iteration: int,
    pg: int,
    attempt: int,
    strategy: dict[str, str],
    best: dict[str, Any],
    best_source: str,
    previous: Previous | None,
    max_error_chars: int = 6000,
    *,
    siblings: Sequence[Mapping[str, str]] = (),
    inspiration: Mapping[str, Any] | None = None,
    best_feedback: str = "",
) -> list[dict[str, str]]:
    """PG messages: a first attempt (``pg.txt``) or a repair (``repair.txt``).

    ``siblings`` are the other strategies of this iteration, so a PG knows what its
    teammates cover and does not drift into their work. ``inspiration`` (archive search,
    first attempts only) is one other elite, shown for ideas. ``best_feedback`` is the
    compiler's report (and timings by size, counters) on the version shown, as a section.
    """
    common = {
        **_kernel_values(kernel, build),
        "iteration": iteration,
        "pg": pg,
        "attempt": attempt,
        "strategy": strategy["name"],
        "strategy_description": strategy["description"],
    }
    if previous is None:
        user = render(
            "pg",
            **common,
            best_performance=performance_line(best["selected"]),
            best_roofline=roofline_line(kernel, best["selected"], build),
            best_source=best_source.rstrip(),
            siblings=siblings_text(siblings),
            inspiration=inspiration_text(inspiration),
            best_feedback=best_feedback,
        )
    else:
        error = previous.error
        if len(error) > max_error_chars:
            error = error[:max_error_chars] + f"\n[... {len(error) - max_error_chars} chars cut]"
        block = (
            f"```c\n{previous.source.rstrip()}\n```"
            if previous.source.strip()
            else "(your previous answer contained no usable C code)"
        )
        user = render(
            "repair",
            **common,
            status=previous.status,
            error=error,
            previous_source_block=block,
            feedback=previous.feedback,
        )
    return [
        {"role": "system", "content": render("pg_system")},
        {"role": "user", "content": user},
    ]


def fit_pg(
    budget: int | None, build_messages: Any, error_chars: int = 6000
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """PG messages within ``budget``: the error text is cut first (its head is kept: the
    first compiler errors matter most), halving down to 500 characters."""
    messages = build_messages(error_chars)
    while budget is not None and estimate_tokens(messages) > budget and error_chars > 500:
        error_chars //= 2
        messages = build_messages(error_chars)
    return messages, {
        "budget_tokens": budget,
        "estimated_tokens": estimate_tokens(messages),
        "error_chars_kept": error_chars,
        "fits": budget is None or estimate_tokens(messages) <= budget,
    }


def run_pg(
    pool: LLMPool,
    kernel: KernelSpec,
    messages: list[dict[str, str]],
    *,
    pg: int,
    seed: int,
    source_out: Path,
) -> dict[str, Any]:
    """Ask one PG; write its code (possibly empty) and return the generation.json record."""
    try:
        result = pool.chat(messages, index=pg, seed=seed, role="pg")
    except PromptTooLong as exc:  # a failed attempt with its reason, never sent
        write_text_atomic(source_out, "")
        return {
            "status": "generation_error",
            "reason": str(exc),
            "extraction": "none",
            "answer_chars": 0,
            "answer_excerpt": "",
            "prompt_sha256": prompt_hash(messages),
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "llm": None,
        }
    extraction = extract_code(result.text, kernel.function, result.finish_reason)
    write_text_atomic(source_out, extraction.code or "")
    return {
        "status": extraction.status,
        "reason": extraction.reason,
        "extraction": extraction.method,
        "answer_chars": len(result.text),
        "answer_excerpt": result.text[:2000] if extraction.status != "ok" else "",
        "prompt_sha256": prompt_hash(messages),
        # LLM calls must run where the servers are, never inside a Slurm job: record it.
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "llm": result.record(),
    }
