"""The PM (plans strategies) and PG (writes one C file) agents.

Prompts are plain-text templates in ``workflow/prompts/`` so users can tune them without
touching code. Both agents treat a bad answer as a value: the PM re-asks with the exact
validation error and, after ``max_reasks``, falls back to the kernel's listed strategies
(recorded as such); the PG's answer without code becomes a failed attempt that the repair
loop feeds back.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from .artifacts import PROMPT_DIR, ArtifactError, load_schema, validate, write_text_atomic
from .extract import extract_code, extract_json
from .kernelspec import KernelSpec
from .llm import LLMPool, PromptTooLong, prompt_hash


def render(name: str, **values: Any) -> str:
    """Fill ``workflow/prompts/<name>.txt``; a missing value is a bug, so it raises."""
    text = (PROMPT_DIR / f"{name}.txt").read_text()
    return Template(text).substitute({k: str(v) for k, v in values.items()})


@dataclass(frozen=True)
class BuildInfo:
    """What the agents are told about the machine and the fixed build."""

    cc: str
    cflags: tuple[str, ...]
    cpu_model: str
    cores: int


def _kernel_values(kernel: KernelSpec, build: BuildInfo) -> dict[str, Any]:
    return {
        "kernel": kernel.name,
        "title": kernel.title,
        "description": kernel.description.strip(),
        "signature": " ".join(kernel.signature.split()),
        "constraints": "\n".join(f"- {c}" for c in kernel.constraints),
        "cpu_model": build.cpu_model,
        "cores": build.cores,
        "cc": build.cc,
        "cflags": " ".join(build.cflags),
    }


def performance_line(selected: dict[str, Any]) -> str:
    """One line the agents read: GFLOP/s, % of the reference, at which size."""
    bench = selected.get("bench") or {}
    size = "x".join(str(bench.get(d, "?")) for d in ("m", "n", "k"))
    return (
        f"{selected['gflops']:.2f} GFLOP/s at {size}, "
        f"{selected['pct_of_reference']:.1f}% of the reference library "
        f"({selected['reference_gflops']:.2f} GFLOP/s measured in the same run)"
    )


def history_text(history: list[dict[str, Any]], limit: int = 40) -> str:
    """The tried strategies and outcomes, newest last; the oldest are cut past ``limit``."""
    if not history:
        return "Nothing yet: this is the first iteration after the baseline."
    lines = []
    cut = max(0, len(history) - limit) if limit > 0 else len(history)
    if cut:
        lines.append(f"({cut} older entries omitted)")
    for h in history[cut:] if limit > 0 else []:
        if h["status"] == "ok":
            outcome = (
                f"valid, {h['gflops']:.2f} GFLOP/s ({h['pct_of_reference']:.1f}% of reference)"
            )
        else:
            outcome = f"FAILED ({h['status']}: {h['reason'][:160]})"
        lines.append(
            f"- iteration {h['iteration']}, PG {h['pg']}: {h['strategy']}: {outcome} "
            f"after {h['attempts']} attempt(s)"
        )
    return "\n".join(lines)


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
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """PM messages within ``budget`` prompt tokens: the oldest history goes first.

    The rule: keep the current best kernel and the newest history; halve the number of
    history entries until the prompt fits (down to none). What was cut is recorded.
    """
    total = len(best.get("history", []))
    limit = 40
    messages = pm_messages(kernel, build, iteration, n, best, source, limit)
    while budget is not None and estimate_tokens(messages) > budget and limit > 0:
        limit //= 2
        messages = pm_messages(kernel, build, iteration, n, best, source, limit)
    return messages, {
        "budget_tokens": budget,
        "estimated_tokens": estimate_tokens(messages),
        "history_entries_cut": max(0, total - limit),
        "fits": budget is None or estimate_tokens(messages) <= budget,
    }


def pm_messages(
    kernel: KernelSpec,
    build: BuildInfo,
    iteration: int,
    n: int,
    best: dict[str, Any],
    source: str,
    history_limit: int = 40,
) -> list[dict[str, str]]:
    sel = best["selected"]
    user = render(
        "pm",
        **_kernel_values(kernel, build),
        iteration=iteration,
        n=n,
        best_iteration=sel["iteration"],
        best_strategy=sel["strategy"],
        best_performance=performance_line(sel),
        best_source=source.rstrip(),
        history=history_text(best.get("history", []), history_limit),
    )
    return [
        {"role": "system", "content": render("pm_system")},
        {"role": "user", "content": user},
    ]


def _snake(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return slug[:60] or "strategy"


def check_plan(answer: object, n: int) -> list[dict[str, str]]:
    """Validate a PM answer; return exactly ``n`` strategies or raise ``ValueError``."""
    try:
        validate(answer, "pm_answer", what="PM answer")
    except ArtifactError as exc:
        raise ValueError(str(exc)) from None
    assert isinstance(answer, dict)
    strategies = [
        {"name": _snake(s["name"]), "description": s["description"].strip()}
        for s in answer["strategies"]
    ]
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
) -> dict[str, Any]:
    """Ask the PM for ``n`` strategies; return the plan.json record."""
    messages, context = fit_pm(kernel, build, iteration, n, best, source, budget)
    calls: list[dict[str, Any]] = []
    errors: list[str] = []
    for ask in range(max_reasks + 1):
        try:
            result = pool.chat(
                messages,
                index=iteration,
                seed=seed + ask,
                json_schema=load_schema("pm_answer"),
                role="pm",
            )
        except PromptTooLong as exc:  # no server can take it: re-asking cannot help
            errors.append(str(exc))
            break
        calls.append({**result.record(), "prompt_sha256": prompt_hash(messages)})
        try:
            strategies = check_plan(extract_json(result.text), n)
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
) -> list[dict[str, str]]:
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
            best_source=best_source.rstrip(),
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
