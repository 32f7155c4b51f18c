"""How one iteration actually ran: wall time, critical path, LLM requests in flight.

Why it lives in every campaign: a benchmark of a part (the LLM pool alone) once said
"parallel" while every campaign ran its PGs one after another. So the evidence is taken
from the campaign's own artifacts: every step stamps when its job ran (``step``), every
LLM call when it was sent and answered (``started_at``/``ended_at``).

* **wall** — from the first step of the iteration (plan, or the baseline) to the end of
  its select.
* **critical path** — the longest chain of dependent steps, by their measured durations:
  plan + the slowest PG's chain (its generate and evaluate steps, repairs included, and
  its final record) + the final round + select. This is what the iteration would take
  with unlimited parallelism and no scheduling delay, so wall / critical path measures
  exactly what the scheduler and the shared resources (timing slot, LLM slots) cost.
* **in flight** — LLM requests sent and not yet answered, over time: the maximum, and
  the mean over the time at least one was in flight (answers replayed from the cache
  are not requests and are left out).
* **server busy fraction** — the share of the wall time during which a server had at
  least one request of this iteration in flight.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from hpcagents.campaign.reader import Iteration


@dataclass(frozen=True)
class Span:
    """One step or one LLM call: what, whose, when (Unix seconds)."""

    kind: str
    start: float
    end: float
    pg: int | None = None
    attempt: int | None = None
    server: str | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


def _step(record: dict[str, Any] | None, kind: str, **who: Any) -> Span | None:
    step = (record or {}).get("step")
    if not step:
        return None
    return Span(kind, float(step["started_at"]), float(step["ended_at"]), **who)


def _call(call: dict[str, Any] | None, pg: int | None) -> Span | None:
    if not call or call.get("cached") or not call.get("started_at") or not call.get("ended_at"):
        return None
    return Span("llm", float(call["started_at"]), float(call["ended_at"]), pg, None, call["server"])


@dataclass
class IterationSpans:
    """Every stamped step and LLM call of one iteration."""

    head: Span | None  # plan (or the baseline's copy in iteration 0)
    chains: dict[int, list[Span]]  # per PG: generate/evaluate of every attempt
    final_round: Span | None
    select: Span | None
    calls: list[Span]

    def all_steps(self) -> list[Span]:
        spans = [self.head, self.final_round, self.select]
        spans += [s for chain in self.chains.values() for s in chain]
        return [s for s in spans if s is not None]


def collect(iteration: Iteration) -> IterationSpans:
    """The spans of one iteration as the reader gives it (missing artifacts are skipped)."""
    plan = iteration.plan
    head = _step(plan, "plan")
    calls = [c for c in (_call(x, None) for x in (plan or {}).get("llm_calls", [])) if c]
    chains: dict[int, list[Span]] = defaultdict(list)
    for pg in iteration.pgs:
        for att in pg.attempts:
            gen = att.generation
            if gen and gen.get("kind") == "baseline":
                head = _step(gen, "baseline", pg=pg.pg, attempt=att.attempt)
            else:
                span = _step(gen, "generate", pg=pg.pg, attempt=att.attempt)
                if span:
                    chains[pg.pg].append(span)
            call = _call((gen or {}).get("llm"), pg.pg)
            if call:
                calls.append(call)
            span = _step(att.evaluation, "evaluate", pg=pg.pg)
            if span:
                chains[pg.pg].append(span)
    return IterationSpans(
        head=head,
        chains=dict(chains),
        final_round=_step(iteration.final_round, "final_round"),
        select=_step(iteration.best, "select"),
        calls=calls,
    )


def in_flight(spans: list[Span]) -> tuple[int, float, float]:
    """(maximum in flight, mean in flight while any is, seconds with any in flight)."""
    events = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
    level = peak = 0
    busy = weighted = 0.0
    last = None
    for t, delta in events:
        if last is not None and level > 0:
            busy += t - last
            weighted += level * (t - last)
        level += delta
        peak = max(peak, level)
        last = t
    return peak, (weighted / busy if busy else 0.0), busy


def iteration_timing(iteration: Iteration) -> dict[str, Any] | None:
    """The parallelism figures of one finished iteration (None if it has no stamps)."""
    spans = collect(iteration)
    steps = spans.all_steps()
    if not steps or spans.select is None:
        return None
    start = min(s.start for s in steps)
    wall = spans.select.end - start
    chain_s = {pg: sum(s.seconds for s in chain) for pg, chain in spans.chains.items()}
    slowest = max(chain_s, key=lambda pg: (chain_s[pg], -pg)) if chain_s else None
    critical = (
        (spans.head.seconds if spans.head else 0.0)
        + (chain_s[slowest] if slowest is not None else 0.0)
        + (spans.final_round.seconds if spans.final_round else 0.0)
        + spans.select.seconds
    )
    peak, mean, busy = in_flight(spans.calls)
    per_server: dict[str, list[Span]] = defaultdict(list)
    for call in spans.calls:
        per_server[call.server or "?"].append(call)
    return {
        "wall_s": round(wall, 3),
        "critical_path_s": round(critical, 3),
        "wall_over_critical": round(wall / critical, 4) if critical else None,
        "slowest_pg": slowest,
        "pg_chain_s": {f"pg{pg}": round(s, 3) for pg, s in sorted(chain_s.items())},
        "final_round_s": round(spans.final_round.seconds, 3) if spans.final_round else None,
        "llm_requests": len(spans.calls),
        "llm_inflight_max": peak,
        "llm_inflight_mean": round(mean, 3),
        "llm_busy_s": round(busy, 3),
        "server_busy_fraction": {
            name: round(in_flight(calls)[2] / wall, 4) if wall else 0.0
            for name, calls in sorted(per_server.items())
        },
    }
