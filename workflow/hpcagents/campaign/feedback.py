"""What the compiler and the machine said about one version, as a prompt shows it.

Why: a repair prompt that only quotes "wrong answer" or a GFLOP/s figure leaves the model
guessing; the next PG prompt that starts from the current best version should say which
of its loops vectorised, how its time grows with the size, and (where the node allows)
whether it is starved by memory. This module turns an evaluation.json record into that
text, tolerating records that have none of it (older campaigns, failed compiles).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import read_json_or_none
from hpcagents.judge.hwcounters import counters_text
from hpcagents.judge.optreport import report_text

#: The most validation sizes listed (a kernel.yaml may have many cases).
MAX_CASES = 16
#: Keys under which a validation case may carry the seconds of its call (the judge's).
_CASE_SECONDS = ("call_s", "seconds", "time_s", "wall_s")


def case_seconds(case: Mapping[str, Any]) -> float | None:
    """The seconds one validation call took, if the record has them."""
    for key in _CASE_SECONDS:
        value = case.get(key)
        if isinstance(value, int | float) and value >= 0:
            return float(value)
    return None


def scaling_text(evaluation: Mapping[str, Any]) -> str:
    """One line per validation size with its call time, and the bench size's best time:
    how the kernel scales (empty when the record has no per-case times)."""
    cases = (evaluation.get("validation") or {}).get("cases") or []
    rows = []
    for case in cases[:MAX_CASES]:
        seconds = case_seconds(case)
        if seconds is not None:
            rows.append(f"{case.get('label', '?')}: {seconds * 1e3:.3f} ms")
    if not rows:
        return ""
    timing = evaluation.get("timing") or {}
    if timing.get("best_s"):
        label = " ".join(f"{k}={v}" for k, v in (timing.get("case") or {}).items())
        rows.append(
            f"bench {label}: {timing['best_s'] * 1e3:.3f} ms (best of {timing.get('repeats')}, "
            f"{timing.get('gflops', 0):.2f} GFLOP/s)"
        )
    return "time per call at each size (one call each, not repeated: a rough guide):\n" + "\n".join(
        f"  {r}" for r in rows
    )


def feedback_text(evaluation: Mapping[str, Any] | None) -> str:
    """The compiler's vectorisation report, the per-size times and the hardware
    counters of one evaluation, as plain text ('' when the version did not compile)."""
    if not evaluation or not evaluation.get("optreport"):
        return ""
    parts = [
        "Compiler vectorisation report on this file (same compiler and flags, "
        f"{evaluation['optreport'].get('compiler', 'gcc')} -fopt-info):",
        report_text(evaluation["optreport"]),
    ]
    scaling = scaling_text(evaluation)
    if scaling:
        parts.append(scaling)
    counters = (evaluation.get("timing") or {}).get("counters")
    if counters:
        parts.append(counters_text(counters))
    return "\n".join(parts)


def feedback_block(title: str, evaluation: Mapping[str, Any] | None) -> str:
    """A prompt section (``## title`` + text + blank line), or '' when there is nothing."""
    text = feedback_text(evaluation)
    # a section and the blank line after it, or nothing: the templates place it right
    # before the next heading, so a prompt without feedback is byte for byte as before
    return f"## {title}\n```\n{text}\n```\n\n" if text else ""


def best_feedback_block(best: Mapping[str, Any]) -> str:
    """The section for a PG starting from the current best: its own evaluation's report."""
    path = (best.get("selected") or {}).get("evaluation")
    evaluation = read_json_or_none(Path(path)) if path else None
    return feedback_block(
        "What the compiler and the machine said about the current best", evaluation
    )
