"""The archive of elites: every valid kernel a campaign found, kept across iterations.

Greedy search forgets every candidate but the incumbent: a fast kernel that lost a noisy
final round, or one that was second by a hair, never reaches the next prompt, and the
model has to re-describe its structure in words. The archive keeps, per kernel, every
valid candidate with its figures (side by side in a final round where it met the
incumbent, else its own run), strategy, code hash and lineage (the incumbent it started
from, the elite it was shown as inspiration). The select step writes it per iteration
(``iter<i>/archive.json``) from the previous one and the iteration's artifacts only, so
a resumed or replayed campaign rebuilds exactly the same file.

Ranking: by % of the reference, a figure normalised by the reference timed in the same
job (side by side where there is one), so kernels timed in different iterations compare
fairly enough to choose which ones the PM reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcagents.core.artifacts import read_json, write_json
from hpcagents.core.layout import KernelLayout
from hpcagents.judge.optreport import report_text

if TYPE_CHECKING:
    from hpcagents.campaign.reader import Attempt


def elite_id(iteration: int, pg: int, attempt: int) -> str:
    """The elite's name: where its attempt lives under results/<kernel>/."""
    return KernelLayout.attempt_id(iteration, pg, attempt)


def _own_run(ev: Mapping[str, Any]) -> dict[str, Any]:
    timing = ev.get("timing") or {}
    return {
        "gflops": timing.get("gflops"),
        "best_s": timing.get("best_s"),
        "pct_of_reference": ev.get("pct_of_reference"),
        "reference_gflops": (ev.get("reference") or {}).get("gflops"),
        "pct_of_roofline": ev.get("pct_of_roofline"),
    }


def _side_by_side(
    entry: Mapping[str, Any], fr: Mapping[str, Any], verdict: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A contender's figure in one final round, with its paired ratio to the incumbent."""
    ratio = None
    for comp in (verdict or {}).get("comparisons") or []:
        if comp["label"] == entry["label"]:
            ratio = comp["median_ratio"]
    return {
        "iteration": fr.get("iteration"),
        "gflops": entry["gflops"],
        "best_s": entry["best_s"],
        "median_s": entry["median_s"],
        "pct_of_reference": entry["pct_of_reference"],
        "reference_gflops": (fr.get("reference") or {}).get("gflops"),
        "rounds": fr.get("rounds"),
        "median_ratio_to_incumbent": ratio,
    }


#: What the judge saw a kernel do that makes it wrong code, not a slow or unlucky one.
WRONG = ("wrong_answer", "crash", "tampering")


def proven_wrong(label: str, fr: Mapping[str, Any] | None) -> bool:
    """Whether the final round (or its scale check, at a larger case) proved ``label``'s
    kernel wrong: such code is never an elite, so the PM is never shown it as one."""
    rounds = [fr or {}, (fr or {}).get("scale_check") or {}]
    return any(
        c["label"] == label and c["status"] in WRONG
        for r in rounds
        for c in r.get("contenders") or []
    )


def _rank(elite: Mapping[str, Any]) -> float:
    fig = elite.get("side_by_side") or elite.get("own_run") or {}
    return float(fig.get("pct_of_reference") or 0.0)


def ranked(archive: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The elites, best first (% of the reference, side by side where known); ties by id
    so the order never depends on anything but the artifacts."""
    return sorted(archive["elites"], key=lambda e: (-_rank(e), e["id"]))


def update_archive(
    kernel: str,
    iteration: int,
    previous: Mapping[str, Any] | None,
    best: Mapping[str, Any],
    per_pg: Mapping[int, list[Attempt]],
    source_name: str,
    final_round: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The archive after ``iteration``: ``previous``'s elites (their figures refreshed
    where this iteration's final round re-timed them), plus every valid chain end of this
    iteration; a kernel whose code hash is already archived is not added twice."""
    elites: dict[str, dict[str, Any]] = {
        e["id"]: dict(e) for e in (previous or {}).get("elites", [])
    }
    by_hash = {e["source_sha256"]: e["id"] for e in elites.values()}
    prev_inc = (previous or {}).get("incumbent")
    verdict = (final_round or {}).get("verdict")
    contenders = {c["label"]: c for c in (final_round or {}).get("contenders", [])}
    for pg, atts in sorted(per_pg.items()):
        att = atts[-1]
        if not att.ok or proven_wrong(f"pg{pg}", final_round):
            continue
        gen = att.generation
        ident = elite_id(int(gen["iteration"]), pg, int(gen["attempt"]))
        source = att.directory / source_name
        sha = att.evaluation.get("source_sha256") or gen.get("source_sha256", "")
        entry = contenders.get(f"pg{pg}")
        side = (
            _side_by_side(entry, final_round, verdict)
            if entry and entry["status"] == "ok" and final_round
            else None
        )
        if sha in by_hash:  # the same code again: one elite, the figures of its latest round
            same = elites[by_hash[sha]]
            same["duplicates"] = sorted({*same.get("duplicates", []), ident})
            if side:
                same["side_by_side"] = side
            continue
        elites[ident] = {
            "id": ident,
            "iteration": int(gen["iteration"]),
            "pg": pg,
            "attempt": int(gen["attempt"]),
            "strategy": gen["strategy"],
            "strategy_description": gen.get("strategy_description", ""),
            "source": str(source),
            "source_sha256": sha,
            "parent": prev_inc,
            "inspiration": gen.get("inspiration"),
            "own_run": _own_run(att.evaluation),
            "side_by_side": side,
            "final_round_status": entry["status"] if entry else None,
            # what the compiler said about it (condensed -fopt-info), for the PM's prompt
            "compiler_report": (
                report_text(att.evaluation["optreport"])
                if att.evaluation.get("optreport")
                else None
            ),
        }
        by_hash[sha] = ident
    sel = best["selected"]
    incumbent = elite_id(int(sel["iteration"]), int(sel["pg"]), int(sel["attempt"]))
    inc_entry = contenders.get("incumbent")
    if prev_inc in elites and inc_entry and inc_entry["status"] == "ok" and final_round:
        elites[prev_inc]["side_by_side"] = _side_by_side(inc_entry, final_round, verdict)
    if incumbent not in elites:  # e.g. an archive started on a campaign that had none
        sha = best.get("source_sha256", "")
        incumbent = by_hash.get(sha, incumbent)
    record: dict[str, Any] = {
        "kernel": kernel,
        "iteration": iteration,
        "incumbent": incumbent if incumbent in elites else None,
        "elites": [],
        "last_round": _last_round(iteration, best, final_round, per_pg, prev_inc, elites),
    }
    record["elites"] = ranked({"elites": list(elites.values())})
    for e in record["elites"]:
        e["is_incumbent"] = e["id"] == record["incumbent"]
    return record


def _last_round(
    iteration: int,
    best: Mapping[str, Any],
    fr: Mapping[str, Any] | None,
    per_pg: Mapping[int, list[Attempt]],
    prev_inc: str | None,
    elites: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any] | None:
    """What the PM reads about this iteration's final round: every contender's figure
    side by side (or why it has none) and the decision with its reason."""
    if fr is None:
        return None
    comps = {c["label"]: c for c in ((fr.get("verdict") or {}).get("comparisons") or [])}
    rows = []
    for c in fr.get("contenders", []):
        label = c["label"]
        if label == "incumbent":
            ident = prev_inc
            strategy = str(elites[prev_inc]["strategy"]) if prev_inc in elites else "incumbent"
        else:
            pg = int(label.removeprefix("pg"))
            gen = per_pg[pg][-1].generation if pg in per_pg else {}
            ident = elite_id(iteration, pg, int(gen.get("attempt", 0)))
            strategy = gen.get("strategy", "")
        comp = comps.get(label)
        rows.append(
            {
                "label": label,
                "id": ident,
                "strategy": strategy,
                "status": c["status"],
                "reason": "" if c["status"] == "ok" else c["reason"],
                "gflops": c["gflops"],
                "pct_of_reference": c["pct_of_reference"],
                "median_ratio_to_incumbent": comp["median_ratio"] if comp else None,
                "wins": comp["wins"] if comp else None,
            }
        )
    return {
        "iteration": iteration,
        "changed": bool(best.get("changed")),
        "reason": best["reason"],
        "rounds": fr.get("rounds"),
        "max_rounds": fr.get("max_rounds"),
        "reference_gflops": (fr.get("reference") or {}).get("gflops"),
        "contenders": rows,
    }


def write_archive(out: Path, record: dict[str, Any]) -> None:
    write_json(out, record, "archive")


def read_archive(path: Path | str | None) -> dict[str, Any] | None:
    """The archive beside a best.json, or None where there is none (an older campaign)."""
    if path is None or not Path(path).is_file():
        return None
    return read_json(path, "archive")
