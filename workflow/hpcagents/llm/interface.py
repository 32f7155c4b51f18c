"""The one interface every server kind answers through, and what a server offers.

Kept apart from the pool (:mod:`hpcagents.llm.pool`), the backends (one module per
server kind: :mod:`hpcagents.llm.openai_http`, :mod:`hpcagents.llm.files`) and the probe
(:mod:`hpcagents.llm.probe`) so that each of them can use it without importing the
others: what an answer is (:class:`LLMResult`), how a request is addressed
(:func:`request_key`), the limits on what is stored, the errors that stop a step (and
:func:`sentence`, how their messages are joined), what the pool hands a backend
(:class:`Request`, :class:`Host`) and what a backend offers the pool (:class:`Backend`),
the outcomes of a try that are worth repeating (:data:`TRANSIENT`), how a prompt is
fitted to a context, and what the start-up probe learned of a server
(:class:`ServerCaps`).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from hpcagents.spec.config import ServerConfig

#: Answers longer than this are cut before they are stored (a runaway model wrote 1.2 MB
#: answers); code or a plan never needs more. Reasoning text is kept shorter still.
MAX_ANSWER_CHARS = 200_000
MAX_REASONING_CHARS = 50_000

#: Room kept free beside prompt and completion (chat template tokens, estimate error).
CONTEXT_MARGIN = 256
#: The least completion room worth sending a request for.
MIN_COMPLETION_TOKENS = 256

#: Outcomes of a failed try that are retried on the same server after a backoff (a
#: ``timeout`` only as often as :attr:`Request.timeout_retries` says). Every try's
#: outcome is recorded; the pool counts these (and timeouts) as the answer's retries.
TRANSIENT = ("connection", "http_429", "http_5xx", "bad_response")


class LLMUnavailable(RuntimeError):
    """No server could answer (or, offline, the cache has no answer): stop cleanly."""


class PromptTooLong(LLMUnavailable):
    """The prompt fits no server of its role: a failed attempt with that reason.

    Rerunning would not help (the same prompt would not fit again), so agents record it
    as the attempt's outcome instead of stopping the campaign.
    """


@dataclass
class LLMResult:
    """One answered request, with everything provenance and accounting need."""

    text: str
    reasoning: str
    server: str
    model: str
    base_url: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    latency_s: float
    cache_key: str
    cached: bool
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    failover: bool = False  # answered by another server than the slot's own
    # Wall clock (Unix seconds) of the request's first try and of its final answer, as
    # seen by this process: the campaign's parallelism (requests in flight, server busy
    # fractions, the critical path) is computed from these, not from a benchmark.
    started_at: float = 0.0
    ended_at: float = 0.0
    role: str = ""  # pm | pg
    # Every try, failed or not: server, outcome, status, detail, started_at, ended_at,
    # backoff_s (the wait after it). llm_accounting charges lost time to its server.
    tries: list[dict[str, Any]] = field(default_factory=list)
    response_format: str = "none"  # the structured-output mode of the answering try
    answer_cut_chars: int = 0  # characters of an oversized answer dropped before storing
    inflight_wait_s: float = 0.0  # time spent waiting for an identical request in flight
    preferred: str = ""  # the request slot's own server (failover: another one answered)
    # token counts estimated (3 characters a token): the answer carried none (a file queue)
    tokens_estimated: bool = False

    def record(self) -> dict[str, Any]:
        """The JSON form stored in generation.json / plan.json."""
        data = asdict(self)
        data.pop("text")
        data["reasoning_chars"] = len(data.pop("reasoning"))
        return data


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """Content address of a request: identical requests replay identical answers."""
    canonical = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def prompt_hash(messages: list[dict[str, str]]) -> str:
    """Hash of the messages alone (what the scripted model logs, too)."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def sentence(text: str) -> str:
    """``text`` without trailing full stops, so joined messages never end in ``..``.

    Shared because the probe, the pool and the backends all build one message out of
    several servers' errors (``"; ".join(...)``) and end it with their own full stop.
    """
    return text.rstrip().rstrip(".")


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Conservative token estimate (3 characters a token; the same rule as the agents')."""
    return sum(len(m["content"]) for m in messages) // 3 + 8 * len(messages)


def completion_room(context: int | None, messages: list[dict[str, str]], max_tokens: int) -> int:
    """The completion tokens to ask a server of ``context`` tokens for (``max_tokens``
    when its context is unknown), or 0 when the prompt cannot fit with room to answer."""
    if context is None:
        return max_tokens
    room = context - estimate_prompt_tokens(messages) - CONTEXT_MARGIN
    if room < min(MIN_COMPLETION_TOKENS, max_tokens):
        return 0
    return min(max_tokens, room)


@dataclass
class Request:
    """One request as the pool hands it to a backend, for one server.

    ``errors`` and ``tries`` are the request's running record over every server it is
    sent to (the pool reports them when no server answers, and stores them with the
    answer); a backend appends to them. ``params`` holds the sampling parameters of the
    request key (``temperature``, ``max_tokens``, ``seed``, and ``reasoning_effort`` and
    ``json_schema`` when asked). ``max_retries`` and ``timeout_retries`` bound a backend
    that retries: the pool allows no timeout retry while another server of the role
    remains, so a dead-silent server costs one ``timeout_s``, not several.
    """

    messages: list[dict[str, str]]
    params: dict[str, Any]
    key: str
    role: str
    errors: list[str]
    tries: list[dict[str, Any]]
    max_retries: int = 0
    timeout_retries: int = 0


class Host(Protocol):
    """What the pool lends a backend while it answers: what the campaign knows of a
    server (the probe's state, shared by every job), a way to record what it learns, the
    server's context length, and one of the server's concurrency slots."""

    def known(self, server: ServerConfig) -> dict[str, Any]:
        """What is known about ``server`` (empty when nothing)."""
        ...

    def learn(self, server: ServerConfig, **fields: Any) -> None:
        """Remember ``fields`` about ``server`` for every later job of the campaign."""
        ...

    def context_tokens(self, server: ServerConfig) -> int | None:
        """The server's context length, None if unknown."""
        ...

    def slot(self, server: ServerConfig) -> AbstractContextManager[int]:
        """Hold one of the server's ``max_concurrency`` slots (host-wide)."""
        ...


class Backend(Protocol):
    """A server kind: the module that talks to it (``ServerConfig.kind`` picks it)."""

    def ask(self, server: ServerConfig, request: Request, host: Host) -> LLMResult | None:
        """Answer ``request`` with ``server``; None when it did not (``request.errors``
        says why, ``request.tries`` records every try)."""
        ...

    def stated_context(self, server: ServerConfig) -> int | None:
        """The context length the server states when asked now; None when it cannot say."""
        ...


@dataclass
class ServerCaps:
    """What one server offers, as probed (``unknown`` where it could not be told)."""

    name: str
    base_url: str
    model: str
    probed_at: float = 0.0
    reachable: bool = False
    usable: bool = True  # False: left out of the campaign; ``reason`` says why
    reason: str = ""
    kind: str = "unknown"  # vllm | llama.cpp | ollama | scripted-stand-in | openai-compatible
    models: list[str] = field(default_factory=list)
    model_present: bool | None = None
    context_tokens: int | None = None
    context_source: str = "unknown"
    structured_output: str = "unknown"  # json_schema | json_object | none | unknown
    reasoning: str = "unknown"  # separate (reasoning_content/reasoning field) | unknown
    notes: list[str] = field(default_factory=list)
    # Unix time the server last left a request unanswered (the pool asks it last for a
    # while); None when it answers.
    down_since: float | None = None
