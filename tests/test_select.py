"""Selection decides on the final round's side-by-side figures, and says why."""

from __future__ import annotations

from pathlib import Path

from hpcagents.campaign.select import Attempt, _decide, _round_noise


def _attempt(pg: int, strategy: str) -> Attempt:
    gen = {"iteration": 1, "pg": pg, "attempt": 0, "strategy": strategy}
    return Attempt(Path(f"/c/iter1/pg{pg}/attempt0"), gen, {"status": "ok"})


def _entry(label: str, runs: list[float], status: str = "ok") -> dict:
    best = min(runs) if runs else None
    return {
        "label": label,
        "status": status,
        "reason": "" if status == "ok" else "wrong output in round 2",
        "runs_s": runs,
        "best_s": best,
        "median_s": sorted(runs)[len(runs) // 2] if runs else None,
        "gflops": 1.0 / best if best else None,
        "pct_of_reference": 50.0,
    }


def _round(*entries: dict, status: str = "ok") -> dict:
    n = max((len(e["runs_s"]) for e in entries), default=0)
    return {
        "status": status,
        "reason": "the reference library failed" if status != "ok" else "",
        "rounds": n,
        "max_rounds": 15,
        "case": {"m": 64},
        "flops": 1e9,  # gflops = 1 / seconds, as the entries' figures
        "reference": {"gflops": 2.0, "runs_s": [1.0] * n},
        "contenders": list(entries),
    }


PER_PG = {1: [_attempt(1, "slow")], 2: [_attempt(2, "fast")]}
FR = Path("final_round.json")


def decide(fr: dict):
    return _decide(1, PER_PG, fr, FR, Path("best/k.c"), "k.c")


def test_the_fastest_side_by_side_wins_when_every_round_says_so():
    fr = _round(
        _entry("incumbent", [1.0, 1.01, 3.0, 1.0, 1.0, 1.0]),
        _entry("pg1", [0.9, 0.91, 0.95, 0.9, 0.9, 0.9]),
        _entry("pg2", [0.5, 0.51, 2.0, 0.5, 0.5, 0.5]),
    )
    new, src, reason, decision = decide(fr)
    assert new["pg"] == 2 and new["final_round"] == str(FR)
    assert src == Path("/c/iter1/pg2/attempt0/k.c")
    assert "side by side" in reason and decision["decided_by"] == "final_round"
    assert decision["rounds_used"] == 6 and decision["wins"] == 6
    assert "sign test" in reason and "median" in reason
    # the best runs and the median runs the paired decision rests on, both said
    assert "2.00 vs 1.00 GFLOP/s (best runs), 2.00 vs 1.00 (median runs)" in reason


def test_a_gain_within_the_noise_keeps_the_incumbent():
    fr = _round(_entry("incumbent", [1.0, 1.2]), _entry("pg2", [0.95, 0.96]))
    new, _, reason, decision = decide(fr)
    assert new is None and "incumbent stays" in reason
    assert decision["outcome"] == "incumbent" and decision["certain"] is False


def test_one_slow_incumbent_run_cannot_crown_an_equal_kernel():
    # the old max-min margin was fooled the other way too: one disturbed incumbent run
    fr = _round(
        _entry("incumbent", [1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0]),
        _entry("pg2", [1.0, 1.01, 0.99, 1.0, 1.0, 1.01, 1.0]),
    )
    new, _, reason, decision = decide(fr)
    assert new is None and decision["wins"] == 1


def test_one_slow_challenger_run_does_not_hide_a_real_gain():
    # issue 20: 1.75x faster, one fast run and four slowed by shared cores, so the old
    # margin (best vs second best, 93%) rejected it; paired per round, it wins every round
    inc = [4.0, 4.2, 4.1, 4.3, 4.0, 4.1, 4.2, 4.0]
    fast = [2.3, 3.8, 3.7, 3.9, 3.6, 3.7, 3.8, 3.6]
    new, _, _, decision = decide(_round(_entry("incumbent", inc), _entry("pg2", fast)))
    assert new is not None and new["pg"] == 2 and decision["wins"] == 8


def test_one_disturbed_run_does_not_widen_the_noise_figure():
    # the figure recorded beside the selected kernel: corroborated by its two best runs
    assert _round_noise(_entry("x", [1.0, 1.01, 5.0, 9.0, 9.0])) < 0.02


def test_a_finalist_failing_its_recheck_cannot_win():
    fr = _round(_entry("incumbent", [1.0, 1.0]), _entry("pg2", [], status="wrong_answer"))
    new, _, reason, decision = decide(fr)
    assert new is None and "no finalist passed" in reason
    assert decision["failed_in_final_round"]


def test_a_final_round_that_could_not_time_keeps_the_incumbent():
    new, _, reason, _ = decide(_round(status="harness_error"))
    assert new is None and "could not time" in reason
