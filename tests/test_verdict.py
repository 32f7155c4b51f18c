"""The final round's paired verdict: a sign test on per-round ratios, fair both ways."""

from __future__ import annotations

import numpy as np
from hpcagents.judge.verdict import binomial_tail, decide, needed_wins


def test_the_sign_test_tail_and_the_wins_it_needs():
    assert binomial_tail(5, 5) == 1 / 32 and binomial_tail(5, 0) == 1.0
    assert needed_wins(4, 0.05) is None  # four rounds can never be significant at 5%
    assert needed_wins(5, 0.05) == 5 and needed_wins(8, 0.05) == 7


def _crowned(incumbent: float, challenger: float, trials: int, seed: int) -> float:
    """How often the adaptive verdict crowns the challenger when every round is slowed by
    a disturbance common to the round (lognormal, sigma 0.5: up to several times) and every
    run by its own (sigma 0.3), looking after each round from the fifth on."""
    rng = np.random.default_rng(seed)
    crowned = 0
    for _ in range(trials):
        common = rng.lognormal(0.0, 0.5, 15)
        own = rng.lognormal(0.0, 0.3, size=(2, 15))
        runs = {"incumbent": incumbent * common * own[0], "pg1": challenger * common * own[1]}
        for n in range(5, 16):
            v = decide({k: list(r[:n]) for k, r in runs.items()}, max_rounds=15)
            if v.stop:
                break
        crowned += v.outcome == "challenger"
    return crowned / trials


def test_a_slower_kernel_is_rarely_crowned_under_heavy_noise():
    # 5% slower: the sequential looks keep the level near its nominal 5%
    assert _crowned(1.0, 1.05, 2000, seed=1) < 0.05


def test_a_faster_kernel_is_crowned_under_the_same_noise():
    assert _crowned(1.5, 1.0, 1000, seed=2) > 0.7


def test_more_rounds_are_asked_while_the_decision_is_open():
    v = decide({"incumbent": [1.0] * 5, "pg1": [0.6, 0.6, 0.6, 0.6, 3.0]}, max_rounds=15)
    assert v.outcome == "incumbent" and not v.stop and v.best.state == "open"
    v = decide({"incumbent": [1.0] * 5, "pg1": [0.6, 0.6, 0.6, 0.6, 3.0]}, max_rounds=5)
    assert v.stop and not v.certain  # out of rounds: the incumbent stays, said as uncertain


def test_the_level_is_split_over_the_challengers():
    one = decide({"incumbent": [1.0] * 5, "pg1": [0.5] * 5})
    two = decide({"incumbent": [1.0] * 5, "pg1": [0.5] * 5, "pg2": [1.0] * 5})
    assert one.outcome == "challenger" and two.outcome == "incumbent" and not two.stop


def test_without_the_incumbent_the_lowest_median_ratio_to_the_reference_wins():
    v = decide({"pg1": [1.0, 9.0, 1.0], "pg2": [0.9, 0.9, 2.0]}, None, reference=[1, 1, 1])
    assert v.outcome == "no_incumbent" and v.winner == "pg2"
