"""The final round's verdict: a paired statistic over interleaved rounds, fair under noise.

Every round of the final round times the incumbent and each challenger one after the
other (order rotated), so the two runs of one round see the same state of the machine.
The verdict therefore looks at the *per-round ratio* challenger time / incumbent time,
not at each one's best run taken in different rounds: a disturbance that slows a whole
round cancels in its ratio, and one round slowed for one contender moves one ratio out
of n, which the median ignores.

The decision is a one-sided sign test on those ratios against the smallest gain worth a
change (``MIN_GAIN``, 2%): a round is a *win* when the challenger is faster than the
incumbent by more than that margin. Equivalently, the challenger is crowned when a
distribution-free upper confidence bound of the median ratio (an order statistic of the
observed ratios: the bound "from the spread across rounds") lies below 1 / (1 + MIN_GAIN).
A slower kernel wins a round with probability below 1/2, so it is crowned with
probability at most ``alpha`` whatever the noise; the significance level is split over the
challengers (Bonferroni), since the best of several is tested.

While no challenger is crowned and none is certainly no faster, the final round adds
rounds, up to ``max_rounds``; it stops early once the decision is certain either way or
can no longer change (even if every remaining round were a win, the test could not pass).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: The smallest gain worth replacing the incumbent: below it two kernels are equal.
MIN_GAIN = 0.02
#: One-sided significance of the sign test (split over the challengers).
ALPHA = 0.05


def binomial_tail(n: int, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the sign test's one-sided p-value."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n


def needed_wins(n: int, alpha: float) -> int | None:
    """The fewest wins out of ``n`` rounds that the sign test accepts at ``alpha`` (None:
    no count can, e.g. 4 rounds at 5%)."""
    for k in range(n + 1):
        if binomial_tail(n, k) <= alpha:
            return k
    return None


@dataclass(frozen=True)
class Comparison:
    """One challenger against the incumbent over the rounds timed so far."""

    label: str
    rounds: int
    ratios: list[float]  # challenger / incumbent, per round
    median_ratio: float
    gain: float  # incumbent / challenger - 1, from the median ratio
    wins: int  # rounds the challenger was faster by more than MIN_GAIN
    p_value: float  # one-sided sign test: P(wins this many | no real gain)
    upper_ratio: float | None  # upper confidence bound of the median ratio (None: too few)
    lower_ratio: float | None  # lower confidence bound of the median ratio
    state: str  # "faster" | "not_faster" | "open" | "futile"


@dataclass(frozen=True)
class Verdict:
    """What the rounds so far say: who wins, how sure, and whether to time more."""

    outcome: str  # "challenger" | "incumbent" | "no_incumbent" | "no_challenger"
    winner: str | None  # the crowned challenger's label
    certain: bool  # decided by the test (not by running out of rounds)
    stop: bool  # no further round can change the outcome
    rounds: int
    alpha: float
    min_gain: float
    max_rounds: int
    best: Comparison | None  # the challenger with the lowest median ratio
    comparisons: list[Comparison] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The JSON form kept in final_round.json (ratios rounded, nothing dropped)."""
        out = asdict(self)
        for c in [out["best"], *out["comparisons"]]:
            if c:
                c["ratios"] = [round(r, 6) for r in c["ratios"]]
        return out

    def explain(self) -> str:
        """One sentence on the statistic: what a reader (and the PM) needs to trust it."""
        b = self.best
        if b is None:
            return f"{self.rounds} interleaved rounds"
        bound = (
            f"upper confidence bound {b.upper_ratio:.3f} at {(1 - self.alpha) * 100:.1f}%"
            if b.upper_ratio is not None
            else "too few rounds for a confidence bound"
        )
        return (
            f"{b.label}/incumbent time ratio per round: median {b.median_ratio:.3f} "
            f"({bound}), faster by more than {self.min_gain * 100:g}% in {b.wins} of "
            f"{b.rounds} interleaved rounds (sign test p = {b.p_value:.3g})"
        )


def _bounds(ratios: Sequence[float], alpha: float) -> tuple[float | None, float | None]:
    """Distribution-free bounds of the median ratio: the order statistics that the sign
    test puts at level ``alpha`` (the j-th smallest and the j-th largest)."""
    n = len(ratios)
    j = needed_wins(n, alpha)
    if not j:
        return None, None
    ordered = sorted(ratios)
    return ordered[j - 1], ordered[n - j]


def compare(
    label: str,
    runs: Sequence[float],
    incumbent: Sequence[float],
    alpha: float,
    min_gain: float,
    max_rounds: int,
) -> Comparison:
    """The paired comparison of one challenger's runs with the incumbent's, round by round."""
    if len(runs) != len(incumbent):
        raise ValueError(
            f"{label}: {len(runs)} runs against the incumbent's {len(incumbent)}: the "
            "rounds are not paired"
        )
    ratios = [c / i if i > 0 else math.inf for c, i in zip(runs, incumbent, strict=True)]
    n = len(ratios)
    threshold = 1.0 / (1.0 + min_gain)
    wins = sum(r < threshold for r in ratios)
    losses = n - wins
    p = binomial_tail(n, wins)
    median = statistics.median(ratios) if ratios else math.inf
    upper, lower = _bounds(ratios, alpha)
    need_now = needed_wins(n, alpha)
    need_max = needed_wins(max(max_rounds, n), alpha)
    if need_now is not None and wins >= need_now:
        state = "faster"
    elif need_now is not None and losses >= need_now:
        state = "not_faster"
    elif need_max is None or wins + max(0, max_rounds - n) < need_max:
        state = "futile"  # even all remaining rounds won would not pass the test
    else:
        state = "open"
    return Comparison(
        label=label,
        rounds=n,
        ratios=ratios,
        median_ratio=median,
        gain=(1.0 / median - 1.0) if median > 0 and math.isfinite(median) else -1.0,
        wins=wins,
        p_value=p,
        upper_ratio=upper,
        lower_ratio=lower,
        state=state,
    )


def decide(
    runs: Mapping[str, Sequence[float]],
    incumbent: str | None = "incumbent",
    *,
    alpha: float = ALPHA,
    min_gain: float = MIN_GAIN,
    max_rounds: int = 15,
    reference: Sequence[float] | None = None,
) -> Verdict:
    """The verdict over the rounds timed so far.

    ``runs`` maps every contender still valid to its times, one per round, aligned (the
    i-th time of each was taken in round i); ``incumbent`` is the incumbent's label, or
    None when it is not among them (it failed in the round). Without an incumbent the
    challenger with the lowest median ratio to the ``reference`` (timed in the same
    rounds) wins; without the reference, the lowest median time.
    """
    challengers = {k: list(v) for k, v in runs.items() if k != incumbent}
    rounds = max((len(v) for v in runs.values()), default=0)
    common = {"alpha": alpha, "min_gain": min_gain, "max_rounds": max_rounds, "rounds": rounds}
    if not challengers:
        return Verdict("no_challenger", None, True, True, best=None, **common)
    if incumbent is None or incumbent not in runs:

        def key(item: tuple[str, list[float]]) -> tuple[float, str]:
            label, times = item
            if reference and len(reference) == len(times):
                return statistics.median(
                    t / r for t, r in zip(times, reference, strict=True)
                ), label
            return statistics.median(times), label

        label = min(challengers.items(), key=key)[0]
        return Verdict("no_incumbent", label, True, True, best=None, **common)
    each_alpha = alpha / len(challengers)
    comps = [
        compare(label, times, runs[incumbent], each_alpha, min_gain, max_rounds)
        for label, times in sorted(challengers.items())
    ]
    best = min(comps, key=lambda c: (c.median_ratio, c.label))
    crowned = [c for c in comps if c.state == "faster"]
    common["alpha"] = each_alpha
    if crowned:
        win = min(crowned, key=lambda c: (c.median_ratio, c.label))
        return Verdict("challenger", win.label, True, True, best=win, comparisons=comps, **common)
    closed = all(c.state in ("not_faster", "futile") for c in comps)
    out_of_rounds = rounds >= max_rounds
    certain = all(c.state == "not_faster" for c in comps)
    return Verdict(
        "incumbent",
        None,
        certain,
        closed or out_of_rounds,
        best=best,
        comparisons=comps,
        **common,
    )


def verdict_of(
    runs: Mapping[str, Sequence[float]], ref_runs: Sequence[float], max_rounds: int
) -> Verdict:
    """The verdict of a final round: its valid contenders' aligned runs, against the one
    labelled "incumbent" (when it is still among them), at the module's level and margin."""
    return decide(
        runs,
        "incumbent" if "incumbent" in runs else None,
        alpha=ALPHA,
        min_gain=MIN_GAIN,
        max_rounds=max_rounds,
        reference=ref_runs,
    )


def reversal(
    challenger: Sequence[float], incumbent: Sequence[float], max_rounds: int
) -> Comparison:
    """The scale check's test, roles swapped: is the *incumbent* faster than the crowned
    challenger, round by round, at the larger case? Its state is "faster" only when the
    incumbent won by more than ``MIN_GAIN`` in significantly many rounds (the same sign
    test at the same level), so noise alone does not take a real gain away; any other
    state leaves the crown where the bench size put it."""
    return compare("incumbent", incumbent, challenger, ALPHA, MIN_GAIN, max_rounds)
