"""The OpenAI-compatible HTTP backend (``kind: openai``): vLLM, SGLang, llama.cpp,
Ollama and whatever else speaks ``/v1/chat/completions``.

Why apart from the pool: the pool decides *which* server is asked and what becomes of
the answer (order, failover, the response cache, accounting); this module knows *how*
one such server is asked and what its answers and errors mean. A new server kind is a
new module beside this one and :mod:`hpcagents.llm.files`, with the same :func:`ask`.

The servers' habits are handled here, on purpose:

* **Structured output** (vLLM, SGLang, llama.cpp constrain the answer to a JSON schema):
  a refused ``response_format`` steps down json_schema -> json_object -> none once and is
  remembered for the campaign (a refusal is the server's nature); llama.cpp's "does not
  match the expected format" (a constrained answer cut short) steps down for this
  request only.
* **Context**: a prompt that cannot fit a server's context (beside room for an answer)
  is never sent there; an overflow error is recognised whatever the server's wording,
  the context length it names is remembered, and the advice says what to set.
* **Reasoning** arrives as ``reasoning_content`` (vLLM, SGLang) or ``reasoning``
  (newer servers); either is kept apart from the answer.
* **Retries are ours** (the client's are off): transient failures are retried with
  exponential backoff and full jitter, a timeout only as often as the pool allows
  (:attr:`~hpcagents.llm.interface.Request.timeout_retries`), and every try is recorded
  so the time it lost is charged to this server. A server that timed out or refused the
  connection is marked ``down_since`` so the pool asks it last for a while.
"""

from __future__ import annotations

import json
import random
import re
import time
import urllib.request
from typing import Any

from hpcagents.llm.interface import (
    MAX_ANSWER_CHARS,
    MAX_REASONING_CHARS,
    TRANSIENT,
    Host,
    LLMResult,
    Request,
    completion_room,
    estimate_prompt_tokens,
    sentence,
)
from hpcagents.llm.probe import (
    STRUCTURED_MODES,
    context_from_models,
    models_listed,
    names_response_format,
)
from hpcagents.spec.config import ConfigError, ServerConfig

_CONTEXT_ERROR = re.compile(
    r"maximum context length|context length|context window|context size|exceeds? the "
    r"(available )?context|too many tokens|context_length_exceeded|exceed_context",
    re.IGNORECASE,
)
_CONTEXT_NUMBER = re.compile(
    r"(?:maximum context length is|context window of|context size \(|n_ctx[\"': ]+)\s*(\d+)",
    re.IGNORECASE,
)


def stated_context(server: ServerConfig) -> int | None:
    """The context length ``server`` states in ``/v1/models`` when asked now; None when
    it does not say or does not answer (the pool asks once per server and remembers)."""
    try:
        with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as resp:
            _, entries = models_listed(json.loads(resp.read()))
    except (OSError, ValueError):
        entries = []
    return context_from_models(entries, server.model)[0]


def classify(exc: BaseException) -> tuple[str, int | None]:
    """Outcome class of a failed try, and its HTTP status.

    ``timeout`` and ``connection``, ``http_429`` and ``http_5xx`` are transient (retried);
    ``format_refused`` steps the structured-output mode down; ``context`` fails over
    with advice; anything else (``http_4xx``, ``bad_response``) fails over at once.
    """
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout", None
    if isinstance(exc, openai.APIConnectionError):
        return "connection", None
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        message = str(exc)
        if _CONTEXT_ERROR.search(message) and code in (400, 413, 422, 500):
            return "context", code
        if names_response_format(message):
            return "format_refused", code
        if "does not match the expected" in message and "format" in message:
            return "format_failed", code  # llama.cpp: constrained output cut short
        if code == 429:
            return "http_429", code
        if code >= 500:
            return "http_5xx", code
        return f"http_{code}", code
    return "bad_response", None


def backoff_s(attempt: int, base: float = 0.5, cap: float = 20.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0.0, min(cap, base * 2**attempt))


def ask(server: ServerConfig, request: Request, host: Host) -> LLMResult | None:
    """One request to one server: retries with exponential backoff and full jitter;
    None when it failed (``request.errors`` and ``request.tries`` say how).

    A timeout is retried ``request.timeout_retries`` times (the pool gives none while
    another server of the role remains), so a dead-silent server costs one
    ``timeout_s``, not several.
    """
    import openai  # imported lazily: the CLI's evaluate path never needs it

    messages, params = request.messages, request.params
    errors, tries = request.errors, request.tries

    def record(outcome: str, status: int | None, detail: str, t0: float, wait: float = 0) -> None:
        tries.append(
            {
                "server": server.name,
                "outcome": outcome,
                "status": status,
                "detail": _clip(detail, 300),
                "started_at": round(t0, 4),
                "ended_at": round(time.time(), 4),
                "backoff_s": round(wait, 4),
            }
        )

    now = time.time()
    try:
        api_key = server.api_key()
    except ConfigError as exc:
        errors.append(f"{server.name}: {exc}")
        record("no_api_key", None, str(exc), now)
        return None
    max_tokens = completion_room(host.context_tokens(server), messages, params["max_tokens"])
    if max_tokens == 0:
        why = (
            f"prompt of about {estimate_prompt_tokens(messages)} tokens does not fit the "
            f"{host.context_tokens(server)}-token context of server '{server.name}' "
            f"(with room for an answer); not sent"
        )
        errors.append(f"{server.name}: {why}")
        record("not_sent_context", None, why, now)
        return None
    client = openai.OpenAI(
        base_url=server.base_url,
        api_key=api_key,
        # a host that is down costs seconds to find out, not the whole read timeout
        timeout=openai.Timeout(server.timeout_s, connect=min(10.0, server.timeout_s)),
        max_retries=0,  # retries are ours: counted, recorded, with jitter
    )
    extra: dict[str, Any] = {}
    effort = params.get("reasoning_effort") or server.reasoning_effort
    if effort:
        extra["reasoning_effort"] = effort
    mode = _structured_mode(server, params, host)
    attempt = timeouts = 0
    while True:
        fmt = {**extra, **_response_format(mode, params.get("json_schema"))}
        t0 = time.time()
        try:
            with host.slot(server):
                start = time.monotonic()
                resp = client.chat.completions.create(
                    model=server.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=params["temperature"],
                    max_tokens=max_tokens,
                    seed=params["seed"],
                    **fmt,
                )
                latency = time.monotonic() - start
            if not getattr(resp, "choices", None):
                raise ValueError("the response has no choices")
        except (openai.APIError, ValueError) as exc:
            outcome, status = classify(exc)
            text = _clip(str(exc), 300)
            if outcome in ("format_refused", "format_failed") and mode != "none":
                new = STRUCTURED_MODES[STRUCTURED_MODES.index(mode) + 1]
                what = "refused" if outcome == "format_refused" else "failed"
                errors.append(
                    f"{server.name}: structured output ({mode}) {what}, asked with "
                    f"{new}: {sentence(text)}"
                )
                record(outcome, status, text, t0)
                if outcome == "format_refused":  # a refusal is the server's nature
                    host.learn(server, structured_output=new)
                mode = new
                continue
            if outcome == "context":
                learned = _CONTEXT_NUMBER.search(str(exc))
                if learned and not server.context_tokens:
                    host.learn(
                        server,
                        context_tokens=int(learned.group(1)),
                        context_source="the server's context-overflow error",
                    )
                errors.append(
                    f"{server.name}: the prompt exceeds the server's context "
                    f"({sentence(text)}); set context_tokens for this server (or lower "
                    f"max_tokens) so prompts are fitted"
                )
                record(outcome, status, text, t0)
                return None
            errors.append(f"{server.name}: {type(exc).__name__}: {sentence(text)}")
            if outcome == "timeout":
                give_up = timeouts >= request.timeout_retries
                timeouts += 1
            elif outcome in TRANSIENT:
                give_up = attempt >= request.max_retries
            else:
                give_up = True
            if give_up:
                record(outcome, status, text, t0)
                if outcome in ("timeout", "connection"):
                    host.learn(server, down_since=round(time.time(), 3))
                return None
            attempt += 1
            wait = backoff_s(attempt)
            record(outcome, status, text, t0, wait)
            time.sleep(wait)
            continue
        break
    record("ok", 200, "", t0)
    if host.known(server).get("down_since"):
        host.learn(server, down_since=None)
    return _result(server, resp, request.key, latency, mode)


def _structured_mode(server: ServerConfig, params: dict[str, Any], host: Host) -> str:
    """The structured-output mode to ask ``server`` with first: none without a schema,
    else what the campaign learned of the server (json_schema until it refuses)."""
    if "json_schema" not in params:
        return "none"
    mode = host.known(server).get("structured_output") or "json_schema"
    if mode not in STRUCTURED_MODES or server.structured_output is False:
        mode = "none" if server.structured_output is False else "json_schema"
    return mode


def _response_format(mode: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    """The request's ``response_format`` argument in ``mode`` (none: no argument)."""
    if mode == "json_schema":
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema},
            }
        }
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


def _result(server: ServerConfig, resp: Any, key: str, latency: float, mode: str) -> LLMResult:
    """The answer of a chat completion, cut to the stored limits."""
    choice = resp.choices[0]
    usage = resp.usage
    details = getattr(usage, "completion_tokens_details", None) if usage else None
    text = choice.message.content or ""
    reasoning = _message_reasoning(choice.message)
    return LLMResult(
        text=text[:MAX_ANSWER_CHARS],
        reasoning=reasoning[:MAX_REASONING_CHARS],
        server=server.name,
        model=resp.model or server.model,
        base_url=server.base_url,
        finish_reason=choice.finish_reason,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        reasoning_tokens=int(getattr(details, "reasoning_tokens", 0) or 0) if details else 0,
        latency_s=round(latency, 4),
        cache_key=key,
        cached=False,
        response_format=mode,
        answer_cut_chars=max(0, len(text) - MAX_ANSWER_CHARS),
    )


def _message_reasoning(message: Any) -> str:
    """Reasoning text from vLLM/SGLang (``reasoning_content``) or newer (``reasoning``)."""
    extra = getattr(message, "model_extra", None) or {}
    for key in ("reasoning_content", "reasoning"):
        value = getattr(message, key, None) or extra.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _clip(text: str, n: int = 300) -> str:
    """``text`` on one line, cut to ``n`` characters (an ellipsis marks the cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
