"""Per-server accounting of LLM calls from their per-try records.

Why per try: a request that failed twice on server A and was answered by server B used to
be counted on B alone, so A's timeouts, retries and backoff appeared nowhere (and A could
vanish from the figures). Here every try is charged to the server it went to: answering
time to the one that answered, time lost (failed tries and the backoff after them) to
the one that failed. Cached calls cost nothing in this run and are only counted.

Pure functions over call records (the ``llm`` of generation.json, ``llm_calls`` of
plan.json); ``summary.py`` calls :func:`per_server`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

#: Figures of one server, all zero to start with (the keys of each per_server entry).
FIELDS = (
    "calls",  # calls this server answered (cached ones included)
    "cached_calls",
    "tries",  # tries sent (or refused before sending) to this server
    "failed_tries",
    "answer_s",  # wall time of the tries this server answered
    "lost_s",  # wall time of its failed tries plus the backoff after them
    "backoff_s",  # of which waiting between tries
    "failovers_in",  # calls it answered for another server's slot
    "failovers_out",  # calls of its own slot that another server answered
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "pm_calls",
    "pg_calls",
    "estimated_token_calls",  # calls whose token counts are estimates (3 characters a token)
)


def _legacy_tries(call: dict[str, Any]) -> list[dict[str, Any]]:
    """Records older than per-try accounting: one try on the answering server."""
    start = float(call.get("started_at") or 0.0)
    end = float(call.get("ended_at") or 0.0)
    if not end:
        end = start + float(call.get("latency_s") or 0.0)
    return [{"server": call["server"], "outcome": "ok", "started_at": start, "ended_at": end}]


def per_server(calls: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Aggregate call records per server: answering time, time lost to faults, tokens.

    Returns ``{server: {field: value}}`` with every field of :data:`FIELDS` (seconds
    rounded to milliseconds, counts as integers), servers sorted by name.
    """
    acc: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0.0))
    for call in calls:
        answered = acc[call["server"]]
        answered["calls"] += 1
        role = call.get("role") or ""
        if role in ("pm", "pg"):
            answered[f"{role}_calls"] += 1
        for key in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
            answered[key] += int(call.get(key) or 0)
        if call.get("tokens_estimated"):
            answered["estimated_token_calls"] += 1
        if call.get("cached"):
            answered["cached_calls"] += 1
            continue  # answered from the cache: no server time was spent in this run
        tries = call.get("tries") or _legacy_tries(call)
        for t in tries:
            srv = acc[t["server"]]
            wall = max(0.0, float(t.get("ended_at") or 0.0) - float(t.get("started_at") or 0.0))
            backoff = float(t.get("backoff_s") or 0.0)
            srv["tries"] += 1
            if t.get("outcome") == "ok":
                srv["answer_s"] += wall
            else:
                srv["failed_tries"] += 1
                srv["lost_s"] += wall + backoff
                srv["backoff_s"] += backoff
        if call.get("failover"):
            answered["failovers_in"] += 1
            own = call.get("preferred") or next(
                (t["server"] for t in tries if t["server"] != call["server"]), None
            )
            if own is not None:
                acc[own]["failovers_out"] += 1
    seconds = {"answer_s", "lost_s", "backoff_s"}
    return {
        name: {k: (round(v, 3) if k in seconds else int(v)) for k, v in figures.items()}
        for name, figures in sorted(acc.items())
    }
