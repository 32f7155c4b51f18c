"""Select the fastest valid kernel of an iteration, with a recorded reason.

A candidate displaces the incumbent only when its gain exceeds the measured noise: the
spread between its best and median run (and the incumbent's), floored at
``MIN_MARGIN``. Otherwise two equally fast kernels would swap places on noise alone and
the campaign would chase its own measurement error.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import read_json, write_json

MIN_MARGIN = 0.02


class SelectionError(RuntimeError):
    """Nothing valid to select (only possible for the baseline): the campaign cannot go on."""


@dataclass(frozen=True)
class Attempt:
    """One attempt directory and its two records."""

    directory: Path
    generation: dict[str, Any]
    evaluation: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.evaluation["status"] == "ok"


def load_attempt(directory: Path) -> Attempt:
    return Attempt(
        directory=directory,
        generation=read_json(directory / "generation.json", "generation"),
        evaluation=read_json(directory / "evaluation.json", "evaluation"),
    )


def attempts_of(final_dir: Path) -> list[Attempt]:
    """All attempts of one PG up to and including ``final_dir`` (attempt0 … attemptN)."""
    final = int(final_dir.name.removeprefix("attempt"))
    return [load_attempt(final_dir.parent / f"attempt{a}") for a in range(final + 1)]


def _noise(evaluation: dict[str, Any]) -> float:
    timing = evaluation.get("timing") or {}
    best, median = timing.get("best_s"), timing.get("median_s")
    if not best or not median:
        return 0.0
    return max(0.0, median / best - 1.0)


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
        "reference_gflops": ref["gflops"],
        "bench": {"m": timing["m"], "n": timing["n"], "k": timing["k"]},
        "evaluation": str(att.directory / "evaluation.json"),
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
        "attempts": len(attempts),
        "repairs": len(attempts) - 1,
        "attempt_statuses": [a.evaluation["status"] for a in attempts],
        "status": ev["status"],
        "reason": ev.get("reason", ""),
        "gflops": timing.get("gflops"),
        "pct_of_reference": ev.get("pct_of_reference"),
        "evaluation": str(final.directory / "evaluation.json"),
    }


def select_iteration(
    kernel: str,
    iteration: int,
    final_dirs: list[Path],
    previous: Path | None,
    out_dir: Path,
    source_name: str,
) -> dict[str, Any]:
    """Write ``out_dir/best.json`` and ``out_dir/best/<source_name>``; return the record."""
    per_pg = []
    for d in final_dirs:
        pg = int(d.parent.name.removeprefix("pg"))
        per_pg.append((pg, attempts_of(d)))
    rows = [candidate_row(iteration, pg, atts) for pg, atts in per_pg]
    valid = [(pg, atts[-1]) for pg, atts in per_pg if atts[-1].ok]
    valid.sort(key=lambda item: (item[1].evaluation["timing"]["best_s"], item[0]))
    prev = read_json(previous, "best") if previous else None
    history = list(prev["history"]) if prev else []
    history += [
        {k: r[k] for k in ("iteration", "pg", "strategy", "attempts", "status", "reason")}
        | {"gflops": r["gflops"], "pct_of_reference": r["pct_of_reference"]}
        for r in rows
        if iteration > 0
    ]
    best_dir = out_dir / "best"
    best_source = best_dir / source_name
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
        inc = prev["selected"]
        machine = prev["machine"]
        src = Path(prev["source"])
        selected, changed = dict(inc), False
        if not valid:
            reason = f"no valid candidate in iteration {iteration}; the incumbent stays"
        else:
            pg, att = valid[0]
            t_new = att.evaluation["timing"]["best_s"]
            margin = max(MIN_MARGIN, _noise(att.evaluation), inc.get("noise", 0.0))
            gain = inc["best_s"] / t_new - 1.0
            if gain > margin:
                selected = selected_record(att, iteration, pg, best_source)
                changed = True
                src = att.directory / source_name
                reason = (
                    f"pg{pg} ({att.generation['strategy']}) is {gain * 100:.1f}% faster than "
                    f"the incumbent, above the noise margin of {margin * 100:.1f}%"
                )
            else:
                reason = (
                    f"fastest candidate pg{pg} ({att.generation['strategy']}) gains "
                    f"{gain * 100:.1f}%, not above the noise margin of {margin * 100:.1f}%; "
                    f"the incumbent stays"
                )
        if not changed:
            selected["source"] = str(best_source)
    best_dir.mkdir(parents=True, exist_ok=True)
    tmp = best_source.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(best_source)
    record = {
        "kernel": kernel,
        "iteration": iteration,
        "selected": selected,
        "changed": changed,
        "reason": reason,
        "candidates": rows,
        "machine": {
            "host": machine.get("host"),
            "cpu_model": machine.get("cpu_model"),
            "cores": machine.get("cores"),
        },
        "history": history,
        "source": str(best_source),
        "source_sha256": hashlib.sha256(best_source.read_bytes()).hexdigest(),
    }
    write_json(out_dir / "best.json", record, "best")
    return record
