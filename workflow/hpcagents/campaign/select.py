"""Select the fastest valid kernel of an iteration, with a recorded reason.

The decision uses only figures measured side by side: the iteration's final round
re-times the finalists and the incumbent interleaved in one job (``finalround``), so a
machine that drifts between jobs cannot crown a slower kernel. A candidate displaces the
incumbent only when the round's paired verdict says so (:mod:`.verdict`: per-round time
ratios, a sign test against a 2% margin): two equally fast kernels never swap places on
noise alone, and one slow run cannot hide a real gain.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from hpcagents.campaign.reader import Attempt, read_chain
from hpcagents.campaign.steptime import step_record
from hpcagents.core.artifacts import read_json, write_json
from hpcagents.judge import scale
from hpcagents.judge.verdict import Verdict, verdict_of


class SelectionError(RuntimeError):
    """Nothing valid to select (only possible for the baseline): the campaign cannot go on."""


def attempts_of(evaluation_json: Path) -> list[Attempt]:
    """All attempts of one PG up to and including the one ``evaluation_json`` ends."""
    return read_chain(evaluation_json)


def chain_end(evaluation_json: Path) -> dict[str, Any]:
    """Which attempt ends one PG's repair chain, given its evaluation.

    The workflow's input function walks the chain (the first attempt that passed, or the
    last one allowed) and hands the final round one evaluation per PG; this is the record
    of that choice, kept in ``final_round.json`` for selection and the reports.
    """
    evaluation_json = Path(evaluation_json)
    attempts = attempts_of(evaluation_json)
    last = attempts[-1]
    return {
        "pg": int(last.generation["pg"]),
        "attempt": int(last.generation["attempt"]),
        "attempts": len(attempts),
        "status": last.evaluation["status"],
        "evaluation": str(evaluation_json),
    }


def _noise(evaluation: dict[str, Any]) -> float:
    timing = evaluation.get("timing") or {}
    best, median = timing.get("best_s"), timing.get("median_s")
    if not best or not median:
        return 0.0
    return max(0.0, median / best - 1.0)


def finalists(chain_ends: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The ``k`` valid final attempts with the highest % of the reference (their own run).

    % of the reference is normalised by the reference timed in the same run, so it ranks
    candidates timed minutes apart more fairly than raw GFLOP/s; the final round then
    settles the order on side-by-side figures.
    """
    valid = []
    for fin in chain_ends:
        ev = read_json(fin["evaluation"], "evaluation")
        if ev["status"] == "ok":
            valid.append(
                {
                    "pg": fin["pg"],
                    "evaluation": fin["evaluation"],
                    "pct_of_reference": float(ev["pct_of_reference"] or 0.0),
                }
            )
    valid.sort(key=lambda c: (-c["pct_of_reference"], c["pg"]))
    return valid[:k]


def _round_noise(entry: dict[str, Any]) -> float:
    """How uncertain a contender's best time is: the gap to its second-best run.

    A disturbance (another tenant, an interrupt) only ever slows a run down, so the best
    of the interleaved rounds is the estimate, and it is as trustworthy as it is
    corroborated: when the two fastest runs agree, one lucky or unlucky run elsewhere does
    not matter (the spread to the median would make every busy machine refuse every
    change). With a single run there is nothing to corroborate it: the median rule applies.
    """
    runs = sorted(entry.get("runs_s") or [])
    if len(runs) >= 2 and runs[0] > 0:
        return runs[1] / runs[0] - 1.0
    best, median = entry.get("best_s"), entry.get("median_s")
    return max(0.0, median / best - 1.0) if best and median else 0.0


def selected_record(att: Attempt, iteration: int, pg: int, source: Path) -> dict[str, Any]:
    ev, gen = att.evaluation, att.generation
    timing, ref = ev["timing"], ev["reference"]
    return {
        "iteration": iteration,
        "pg": pg,
        "attempt": gen["attempt"],
        "strategy": gen["strategy"],
        "gflops": timing["gflops"],
        "best_s": timing["best_s"],
        "median_s": timing["median_s"],
        "noise": round(_noise(ev), 6),
        "pct_of_reference": ev["pct_of_reference"],
        "pct_of_roofline": ev.get("pct_of_roofline"),
        "roofline": ev.get("roofline"),
        "reference_gflops": ref["gflops"],
        "bench": dict(timing["case"]),
        "evaluation": str(att.evaluation_path),
        "source": str(source),
    }


def candidate_row(iteration: int, pg: int, attempts: list[Attempt]) -> dict[str, Any]:
    final = attempts[-1]
    ev = final.evaluation
    timing = ev.get("timing") or {}
    return {
        "iteration": iteration,
        "pg": pg,
        "strategy": final.generation["strategy"],
        "strategy_description": final.generation.get("strategy_description", ""),
        "attempts": len(attempts),
        "repairs": len(attempts) - 1,
        "attempt_statuses": [a.evaluation["status"] for a in attempts],
        "status": ev["status"],
        "reason": ev.get("reason", ""),
        "gflops": timing.get("gflops"),
        "pct_of_reference": ev.get("pct_of_reference"),
        "pct_of_roofline": ev.get("pct_of_roofline"),
        "reference_gflops": (ev.get("reference") or {}).get("gflops"),
        "evaluation": str(final.evaluation_path),
    }


def _from_round(
    att: Attempt,
    entry: dict[str, Any],
    fr: dict[str, Any],
    path: Path,
    pg: int,
    source: Path,
    at_scale: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The selected record with the final round's side-by-side figures (and its figures
    at the scale case, when the round checked it there)."""
    return {
        **({"at_scale": at_scale} if at_scale else {}),
        "iteration": att.generation["iteration"],
        "pg": pg,
        "attempt": att.generation["attempt"],
        "strategy": att.generation["strategy"],
        "gflops": entry["gflops"],
        "best_s": entry["best_s"],
        "median_s": entry["median_s"],
        "noise": round(_round_noise(entry), 6),
        "pct_of_reference": entry["pct_of_reference"],
        "pct_of_roofline": entry.get("pct_of_roofline"),
        "roofline": entry.get("roofline"),
        "reference_gflops": fr["reference"]["gflops"],
        "bench": fr["case"],
        "evaluation": str(att.evaluation_path),
        "final_round": str(path),
        "source": str(source),
    }


def _gain(gain: float) -> str:
    """A gain as a reader says it: "12.3% faster", "4.10x faster", "8.0% slower"."""
    if gain >= 1.0:
        return f"{1.0 + gain:.2f}x faster"
    if gain >= 0:
        return f"{gain * 100:.1f}% faster"
    return f"{(1.0 / (1.0 + gain) - 1.0) * 100:.1f}% slower" if gain > -1.0 else "slower"


def round_verdict(fr: dict[str, Any]) -> Verdict:
    """The final round's verdict, recomputed from its recorded runs (the same function the
    round used to decide when to stop, on the same figures: select and the round agree)."""
    runs = {c["label"]: c["runs_s"] for c in fr["contenders"] if c["status"] == "ok"}
    ref_runs = (fr.get("reference") or {}).get("runs_s") or []
    max_rounds = int(fr.get("max_rounds") or fr.get("rounds") or 1)
    return verdict_of(runs, ref_runs, max_rounds)


def _scale_of(fr: dict[str, Any], label: str, decision: dict[str, Any]) -> tuple[str, str]:
    """(outcome, sentence) of the round's scale check for ``label`` (the challenger the
    verdict would crown), recomputed from its runs as the verdict is; its record goes into
    ``decision["scale_check"]``."""
    sc = fr.get("scale_check")
    if not sc:
        return "none", ""
    outcome, test = scale.outcome_of(sc, label)
    entry = next((c for c in sc.get("contenders") or [] if c["label"] == label), None)
    record: dict[str, Any] = {
        "outcome": outcome,
        "factor": sc["factor"],
        "case": sc["case"],
        "rounds": sc["rounds"],
        "reason": sc["reason"],
    }
    if entry and entry["status"] == "ok":
        record.update(
            gflops=entry["gflops"],
            pct_of_reference=entry["pct_of_reference"],
            pct_at_bench=entry["pct_at_bench"],
            figure_holds=entry["figure_holds"],
            reference_gflops=(sc.get("reference") or {}).get("gflops"),
        )
    if test is not None:
        record.update(
            median_ratio=round(test.median_ratio, 6), wins=test.wins, p_value=test.p_value
        )
    decision["scale_check"] = record
    return outcome, scale.describe(sc, label)


def _at_scale(decision: dict[str, Any]) -> dict[str, Any] | None:
    """The crowned kernel's figures at the scale case, for the selected record."""
    sc = decision.get("scale_check") or {}
    if "pct_of_reference" not in sc:
        return None
    keys = ("factor", "case", "gflops", "pct_of_reference", "pct_at_bench", "figure_holds")
    return {k: sc[k] for k in keys} | {"reference_gflops": sc.get("reference_gflops")}


def _decide(
    iteration: int,
    per_pg: dict[int, list[Attempt]],
    fr: dict[str, Any],
    path: Path,
    best_source: Path,
    source_name: str,
) -> tuple[dict[str, Any] | None, Path | None, str, dict[str, Any]]:
    """(new selected record or None, its source, reason, decision) from the final round.

    The decision is the round's paired verdict (:mod:`.verdict`): a challenger replaces
    the incumbent only when it was faster by more than ``MIN_GAIN`` in significantly many
    of the interleaved rounds (a sign test, level split over the challengers).
    """
    entries = {c["label"]: c for c in fr["contenders"]}
    inc = entries.get("incumbent")
    decision: dict[str, Any] = {
        "decided_by": "final_round",
        "final_round": str(path),
        "rounds_used": int(fr.get("rounds") or 0),
    }
    if fr.get("skipped"):
        return None, None, f"{fr['skipped']}; the incumbent stays", decision
    if fr.get("status") == "harness_error":
        reason = f"the final round could not time anything ({fr['reason']}); the incumbent stays"
        return None, None, reason, decision
    failed = [
        f"{label}: {e['status']} ({e['reason']})"
        for label, e in entries.items()
        if e["status"] != "ok"
    ]
    if failed:
        decision["failed_in_final_round"] = failed
    timed = [label for label, e in entries.items() if label != "incumbent" and e["status"] == "ok"]
    if not timed:
        why = "; ".join(failed) or "none timed"
        return (
            None,
            None,
            f"no finalist passed the final round ({why}); the incumbent stays",
            decision,
        )
    verdict = round_verdict(fr)
    rounds = f"{fr['rounds']} interleaved rounds" + (
        f" (of at most {fr['max_rounds']})" if fr.get("max_rounds") else ""
    )
    decision.update(
        outcome=verdict.outcome,
        certain=verdict.certain,
        statistic=verdict.explain(),
        reference_gflops=fr["reference"]["gflops"],
    )
    if verdict.outcome == "no_incumbent":
        label = str(verdict.winner)
        pg, entry = int(label.removeprefix("pg")), entries[label]
        att = per_pg[pg][-1]
        decision["challenger"] = {
            "label": label,
            "best_s": entry["best_s"],
            "gflops": entry["gflops"],
        }
        why = inc["reason"] if inc else "not in the round"
        outcome, at_scale = _scale_of(fr, label, decision)
        fastest = (
            f"{label} ({att.generation['strategy']}) is the fastest finalist over {rounds} "
            f"(median time ratio to the reference); the incumbent could not be re-timed ({why})"
        )
        if outcome == "winner_failed":
            return None, None, f"{fastest}; {at_scale}, so the incumbent stays", decision
        return (
            _from_round(att, entry, fr, path, pg, best_source, _at_scale(decision)),
            att.directory / source_name,
            fastest + (f"; {at_scale}" if at_scale else ""),
            decision,
        )
    best = verdict.best
    assert best is not None and inc is not None
    label = best.label
    pg, entry = int(label.removeprefix("pg")), entries[label]
    att = per_pg[pg][-1]
    strategy = att.generation["strategy"]
    decision.update(
        challenger={"label": label, "best_s": entry["best_s"], "gflops": entry["gflops"]},
        incumbent={"best_s": inc["best_s"], "gflops": inc["gflops"]},
        gain=round(best.gain, 6),
        median_ratio=round(best.median_ratio, 6),
        upper_ratio=None if best.upper_ratio is None else round(best.upper_ratio, 6),
        wins=best.wins,
        p_value=round(best.p_value, 6),
        alpha=round(verdict.alpha, 6),
        margin=verdict.min_gain,
    )
    # the decision is paired (per-round ratios); the medians are the figures it rests on,
    # the best runs what each reached once: both are said, so they never seem to disagree
    medians = ""
    if fr.get("flops") and entry.get("median_s") and inc.get("median_s"):
        medians = (
            f", {fr['flops'] / entry['median_s'] / 1e9:.2f} vs "
            f"{fr['flops'] / inc['median_s'] / 1e9:.2f} (median runs)"
        )
    side = (
        f"side by side over {rounds}: {entry['gflops']:.2f} vs {inc['gflops']:.2f} GFLOP/s "
        f"(best runs){medians}, reference {fr['reference']['gflops']:.2f}; {verdict.explain()}"
    )
    if verdict.outcome == "challenger":
        outcome, at_scale = _scale_of(fr, label, decision)
        gain = (
            f"{label} ({strategy}) is {_gain(best.gain)} than the incumbent "
            f"(median of the paired per-round ratios) {side}"
        )
        if outcome in ("gain_reversed", "winner_failed"):
            decision["outcome"] = "incumbent"
            return None, None, f"{gain}; {at_scale}, so the incumbent stays", decision
        return (
            _from_round(att, entry, fr, path, pg, best_source, _at_scale(decision)),
            att.directory / source_name,
            gain + (f"; {at_scale}" if at_scale else ""),
            decision,
        )
    if verdict.certain:
        why = f"it is not faster by more than {verdict.min_gain * 100:g}%"
    elif best.state == "futile":
        why = (
            f"no further rounds (up to {verdict.max_rounds}) could establish a gain of more "
            f"than {verdict.min_gain * 100:g}%"
        )
    else:
        why = f"a gain is not established within {verdict.max_rounds} rounds"
    return (
        None,
        None,
        f"fastest finalist {label} ({strategy}) is {_gain(best.gain)} than the incumbent "
        f"(median of the paired per-round ratios) {side}; {why}, so the incumbent stays",
        decision,
    )


def select_iteration(
    kernel: str,
    iteration: int,
    finals: list[Path],
    previous: Path | None,
    out: Path,
    source_name: str,
    final_round: Path | None = None,
    *,
    best_source: Path,
    archive: Path,
    previous_archive: Path | None = None,
) -> dict[str, Any]:
    """Write ``out`` (the iteration's ``best.json``), ``best_source`` (the selected
    kernel's source) and ``archive`` (the iteration's archive of elites, see
    :mod:`.archive`, from ``previous_archive`` and this iteration's artifacts): the three
    outputs the rule declares, nothing else. Returns the best record.

    ``finals`` are the evaluations that end each PG's chain (after the baseline, the final
    round lists them); ``final_round`` is the iteration's side-by-side re-timing
    (required after the baseline).
    """
    from hpcagents.campaign.archive import read_archive, update_archive, write_archive

    per_pg: dict[int, list[Attempt]] = {}
    for f in finals:
        atts = attempts_of(Path(f))
        per_pg[int(atts[-1].generation["pg"])] = atts
    rows = [candidate_row(iteration, pg, atts) for pg, atts in sorted(per_pg.items())]
    valid = [(pg, atts[-1]) for pg, atts in sorted(per_pg.items()) if atts[-1].ok]
    valid.sort(key=lambda item: (item[1].evaluation["timing"]["best_s"], item[0]))
    prev = read_json(previous, "best") if previous else None
    history = list(prev["history"]) if prev else []
    history += [
        {
            k: r[k]
            for k in (
                "iteration",
                "pg",
                "strategy",
                "strategy_description",
                "attempts",
                "status",
                "reason",
                "reference_gflops",
                "pct_of_roofline",
            )
        }
        | {"gflops": r["gflops"], "pct_of_reference": r["pct_of_reference"]}
        for r in rows
        if iteration > 0
    ]
    best_source = Path(best_source)
    decision: dict[str, Any] = {"decided_by": "baseline"}
    fr: dict[str, Any] | None = None
    if prev is None:
        if not valid:
            why = "; ".join(f"pg{r['pg']}: {r['status']}: {r['reason']}" for r in rows)
            raise SelectionError(f"{kernel}: the baseline did not pass evaluation ({why})")
        pg, att = valid[0]
        selected = selected_record(att, iteration, pg, best_source)
        changed, reason = True, "baseline: the reference point of the campaign"
        src = att.directory / source_name
        machine = att.evaluation["provenance"]
    else:
        if final_round is None:
            raise SelectionError(
                f"{kernel} iteration {iteration}: selection needs the final round's "
                "side-by-side figures (final_round.json)"
            )
        inc = prev["selected"]
        machine = prev["machine"]
        fr = read_json(final_round, "final_round")
        new, new_src, reason, decision = _decide(
            iteration, per_pg, fr, final_round, best_source, source_name
        )
        if new is None:
            selected, changed, src = dict(inc), False, Path(prev["source"])
            selected["source"] = str(best_source)
        else:
            selected, changed, src = new, True, new_src
    best_source.parent.mkdir(parents=True, exist_ok=True)
    tmp = best_source.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(best_source)
    record = {
        "kernel": kernel,
        "iteration": iteration,
        "selected": selected,
        "changed": changed,
        "reason": reason,
        "decision": decision,
        "candidates": rows,
        "machine": {
            "host": machine.get("host"),
            "cpu_model": machine.get("cpu_model"),
            "cores": machine.get("cores"),
        },
        "history": history,
        "source": str(best_source),
        "source_sha256": hashlib.sha256(best_source.read_bytes()).hexdigest(),
        "step": step_record(),
    }
    write_json(out, record, "best")
    before = read_archive(previous_archive) if previous_archive else None
    write_archive(
        Path(archive),
        update_archive(kernel, iteration, before, record, per_pg, source_name, fr),
    )
    return record
