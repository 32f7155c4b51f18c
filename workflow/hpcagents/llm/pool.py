"""The LLM pool: several OpenAI-compatible servers, a response cache, per-server caps.

Why each piece exists:

* **Roles and deterministic assignment.** Each server serves the PM, the PGs or both;
  request slot ``index`` goes to server ``index mod S`` among the servers of its role, so
  a campaign's load spread is reproducible; **failover** walks the role's other servers
  in order when one is down, so a dead GPU node costs latency, not the campaign.
* **Per-server concurrency caps** are file locks, because every Snakemake job is its own
  process: an in-process semaphore would cap nothing.
* **The response cache** is content-addressed by the request (preferred model, messages,
  sampling parameters, seed). A rerun after a kill replays answers it already paid for,
  and ``offline`` mode replays a whole archived campaign with no server at all. An
  identical request already **in flight** (another job, or a killed run's orphaned job)
  is waited for through a file lock keyed by the request, never sent twice; the lock
  dies with its process, so a killed sender blocks nobody.
* **Every try is recorded** (server, outcome, wall-clock start and end, backoff), so the
  time lost to faults is charged to the server that caused it.
* **Servers' habits are handled on purpose**: a refused ``response_format`` steps down
  json_schema -> json_object -> none once and is remembered for the campaign; a prompt
  that cannot fit a server's context is never sent there; an overflow error is
  recognised and answered with the right advice.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import read_json, write_json
from hpcagents.llm import files as llm_files
from hpcagents.llm.interface import (
    MAX_ANSWER_CHARS,
    MAX_REASONING_CHARS,
    LLMResult,
    LLMUnavailable,
    PromptTooLong,
    estimate_prompt_tokens,
    request_key,
    sentence,
)
from hpcagents.llm.probe import (
    STRUCTURED_MODES,
    ServerState,
    context_from_models,
    models_listed,
    names_response_format,
)
from hpcagents.spec.config import ConfigError, LLMConfig, ServerConfig

#: Room kept free beside prompt and completion (chat template tokens, estimate error).
CONTEXT_MARGIN = 256
#: The least completion room worth sending a request for.
MIN_COMPLETION_TOKENS = 256
#: A server that hung or refused a request is asked last for this many of its timeouts.
DOWN_HOLD_FACTOR = 2.0
_CONTEXT_ERROR = re.compile(
    r"maximum context length|context length|context window|context size|exceeds? the "
    r"(available )?context|too many tokens|context_length_exceeded|exceed_context",
    re.IGNORECASE,
)
_CONTEXT_NUMBER = re.compile(
    r"(?:maximum context length is|context window of|context size \(|n_ctx[\"': ]+)\s*(\d+)",
    re.IGNORECASE,
)


class ResponseCache:
    """Content-addressed store of answered requests under ``<cache_dir>/<k[:2]>/<k>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return read_json(path)
        except (OSError, ValueError):
            return None  # unreadable entry: treat as a miss, it will be rewritten

    def put(self, key: str, entry: dict[str, Any], slot: str | None = None) -> None:
        write_json(self.path(key), entry)
        if slot is not None:
            write_json(self.root / "slots" / f"{slot}.json", {"key": key})

    def get_slot(self, slot: str) -> dict[str, Any] | None:
        """The answer recorded for a request slot, whatever its exact prompt was."""
        path = self.root / "slots" / f"{slot}.json"
        if not path.is_file():
            return None
        return self.get(read_json(path)["key"])

    @contextmanager
    def inflight(self, key: str) -> Iterator[bool]:
        """Hold the request ``key`` exclusively; yields True when another holder had it
        first (then its answer is probably in the cache now).

        A ``flock`` dies with its process: a killed sender's lock is gone at once, and an
        orphaned sender that is still running is waited for.
        """
        lock_dir = self.root / ".inflight"
        lock_dir.mkdir(parents=True, exist_ok=True)
        path = lock_dir / f"{key}.lock"
        with open(path, "a+") as fh:
            waited = False
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited = True
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield waited
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def server_slot(lock_dir: Path, server: ServerConfig, poll_s: float = 0.05) -> Iterator[int]:
    """Hold one of ``server.max_concurrency`` slots, shared by every process on this host."""
    lock_dir = lock_dir / server.name
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(server.max_concurrency):
            fh = open(lock_dir / f"slot{slot}.lock", "a+")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            try:
                yield slot
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        time.sleep(poll_s)


def _message_reasoning(message: Any) -> str:
    """Reasoning text from vLLM/SGLang (``reasoning_content``) or newer (``reasoning``)."""
    extra = getattr(message, "model_extra", None) or {}
    for key in ("reasoning_content", "reasoning"):
        value = getattr(message, key, None) or extra.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _clip(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


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


TRANSIENT = ("connection", "http_429", "http_5xx", "bad_response")


def _advice(outcomes: set[str]) -> str:
    """What the user should do, from how the tries failed."""
    if outcomes <= {"context", "not_sent_context"}:
        return (
            "the prompt does not fit the context of any server of this role: raise the "
            "servers' context (and context_tokens), lower max_tokens, or shorten the prompt"
        )
    parts = []
    if "files_unanswered" in outcomes:
        parts.append("answer the waiting request file(s) named above, then rerun to resume")
    if "files_unwritable" in outcomes:
        parts.append("make the file queue's queue_dir writable")
    if outcomes & {"timeout", "connection", "http_429", "http_5xx", "bad_response"}:
        parts.append("rerun to resume once a server answers")
    if outcomes & {"no_api_key", "http_401", "http_403"}:
        parts.append("check each server's api_key_env")
    if "http_404" in outcomes:
        parts.append("check each server's model and base_url (hpcagents check-config --servers)")
    if outcomes & {"context", "not_sent_context"}:
        parts.append("some servers' context is too small for this prompt")
    return "; ".join(parts) or "see the errors above"


class LLMPool:
    """Send chat requests to the configured servers with caching, caps and failover."""

    def __init__(self, cfg: LLMConfig, lock_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.cache = ResponseCache(cfg.cache_dir)
        self.lock_dir = lock_dir or cfg.cache_dir / ".slots"
        self.state = ServerState(cfg.state_dir)
        self._ctx: dict[str, int | None] = {}

    # -- what is known about a server ---------------------------------------------

    def known(self, server: ServerConfig) -> dict[str, Any]:
        return self.state.load(server)

    def context_tokens(self, server: ServerConfig) -> int | None:
        """The server's context length: config, else what the probe (or an overflow
        error) taught, else ``/v1/models`` asked now; None if unknown."""
        if server.context_tokens:
            return server.context_tokens
        if server.kind == "files":
            return None  # whoever answers the files fits the prompt to their model
        known = self.known(server).get("context_tokens")
        if known:
            return int(known)
        if self.cfg.offline:
            return None
        if server.name not in self._ctx:
            import urllib.request

            try:
                with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as resp:
                    _, entries = models_listed(json.loads(resp.read()))
            except (OSError, ValueError):
                entries = []
            self._ctx[server.name] = context_from_models(entries, server.model)[0]
        return self._ctx[server.name]

    def max_tokens(self, role: str) -> int:
        return self.cfg.role(role).max_tokens or self.cfg.max_tokens

    def prompt_budget(self, index: int, role: str = "pg") -> int | None:
        """Prompt tokens that fit the preferred server beside the completion and a margin.

        The completion's room is capped at half the context, so a ``max_tokens`` as large
        as the context still leaves the prompt half of it (the request then asks for less
        completion, see :meth:`_fit`), instead of a budget too small for any prompt.
        """
        servers = self.order(index, role)
        if not servers:
            return None
        ctx = self.context_tokens(servers[0])
        if ctx is None:
            return None
        return max(0, ctx - min(self.max_tokens(role), ctx // 2) - CONTEXT_MARGIN)

    def order(self, index: int, role: str = "pg") -> list[ServerConfig]:
        """The role's servers, slot ``index``'s own first, then the others in turn.

        Servers the start-up probe left out (no key, unknown model, wrong URL) are not
        asked at all.
        """
        servers = [
            s for s in self.cfg.servers_for(role) if self.known(s).get("usable", True) is not False
        ]
        if not servers:
            return []
        start = index % len(servers)
        return servers[start:] + servers[:start]

    # -- one request ------------------------------------------------------------------

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        index: int,
        seed: int,
        max_tokens: int | None = None,
        json_schema: dict[str, Any] | None = None,
        role: str = "pg",
    ) -> LLMResult:
        """Answer ``messages`` for ``role``: from the cache if this exact request was
        answered before (or is being answered right now by another process).

        ``json_schema`` asks servers that support structured output (vLLM, SGLang,
        llama.cpp) to constrain the answer; a server that refuses ``response_format`` is
        asked with ``json_object``, then without (the caller validates the JSON anyway).
        """
        rcfg = self.cfg.role(role)
        order = self.order(index, role)
        if not order and not self.cfg.offline:
            raise LLMUnavailable(
                f"no LLM server may answer for the {role.upper()}: every server with that "
                f"role was left out at start (see {self.cfg.state_dir or 'the probe'}); fix "
                f"llm.servers and rerun"
            )
        model = order[0].model if order else self.cfg.servers_for(role)[0].model
        params: dict[str, Any] = {
            "temperature": rcfg.temperature
            if rcfg.temperature is not None
            else self.cfg.temperature,
            "max_tokens": max_tokens or self.max_tokens(role),
            "seed": seed,
        }
        if rcfg.reasoning_effort:
            params["reasoning_effort"] = rcfg.reasoning_effort
        if json_schema is not None:
            params["json_schema"] = json_schema
        key = request_key(model, messages, params)
        # The slot names the request's place in the campaign (model, seed, PG index):
        # prompts quote measured GFLOP/s, so a replay's prompts differ in those figures,
        # and offline replay answers by slot when the exact prompt is not in the cache.
        slot = request_key(
            model, [], {"seed": seed, "index": index, "json": json_schema is not None}
        )
        hit = self.cache.get(key)
        if hit is not None:
            return LLMResult(**{**hit["result"], "cached": True})
        if self.cfg.offline:
            hit = self.cache.get_slot(slot)
            if hit is not None:
                result = LLMResult(**{**hit["result"], "cached": True})
                result.errors = [
                    *result.errors,
                    "offline replay: answered by request slot "
                    "(the prompt differs from the recorded one, e.g. in timings)",
                ]
                return result
            raise LLMUnavailable(
                f"offline replay: no cached answer for request {key[:16]} "
                f"(cache {self.cfg.cache_dir}); the archived campaign does not contain it"
            )
        wait_start = time.monotonic()
        with self.cache.inflight(key) as waited:
            if waited:
                hit = self.cache.get(key)
                if hit is not None:
                    return LLMResult(
                        **{
                            **hit["result"],
                            "cached": True,
                            "inflight_wait_s": round(time.monotonic() - wait_start, 4),
                        }
                    )
            return self._send(order, messages, params, key, slot, role)

    def _send(
        self,
        order: list[ServerConfig],
        messages: list[dict[str, str]],
        params: dict[str, Any],
        key: str,
        slot: str,
        role: str,
    ) -> LLMResult:
        errors: list[str] = []
        tries: list[dict[str, Any]] = []
        started_at = time.time()
        # A server that just left a request hanging (or refused every try) is asked last
        # for a while: each request would otherwise pay its timeout again. The slot's own
        # server stays ``order[0]`` for the cache key and the failover flag.
        sending = sorted(order, key=self._recently_down)
        if sending[0].name != order[0].name:
            ago = time.time() - float(self.known(order[0])["down_since"])
            errors.append(
                f"{order[0].name}: asked last: it left a request unanswered {ago:.0f} s ago"
            )
        for n, server in enumerate(sending):
            last = n == len(sending) - 1
            if server.kind == "files":  # [feedback] a queue folder, not HTTP
                result = llm_files.ask(server, messages, params, key, role, errors, tries)
            else:
                result = self._ask(server, messages, params, key, errors, tries, last)
            if result is None:
                continue
            result.role = role
            result.tries = tries
            result.errors = errors
            result.retries = sum(t["outcome"] in (*TRANSIENT, "timeout") for t in tries)
            result.failover = server.name != order[0].name
            result.preferred = order[0].name
            result.started_at, result.ended_at = round(started_at, 4), round(time.time(), 4)
            self.cache.put(
                key,
                {
                    "key": key,
                    "request": {"model": order[0].model, "messages": messages, "params": params},
                    "result": asdict(result),
                },
                slot=slot,
            )
            return result
        outcomes = {t["outcome"] for t in tries}
        detail = " | ".join(sentence(e) for e in errors[-6:])
        advice = _advice(outcomes)
        if outcomes and outcomes <= {"context", "not_sent_context"}:
            raise PromptTooLong(f"{detail}. {advice[0].upper()}{advice[1:]}")
        raise LLMUnavailable(
            f"no LLM server answered for the {role.upper()}: {detail}. "
            f"{advice[0].upper()}{advice[1:]}"
        )

    def _recently_down(self, server: ServerConfig) -> bool:
        since = self.known(server).get("down_since")
        return bool(since) and time.time() - float(since) < DOWN_HOLD_FACTOR * server.timeout_s

    def _fit(self, server: ServerConfig, messages: list[dict[str, str]], max_tokens: int) -> int:
        """The completion tokens to ask ``server`` for, or 0 when the prompt cannot fit."""
        ctx = self.context_tokens(server)
        if ctx is None:
            return max_tokens
        room = ctx - estimate_prompt_tokens(messages) - CONTEXT_MARGIN
        if room < min(MIN_COMPLETION_TOKENS, max_tokens):
            return 0
        return min(max_tokens, room)

    def _ask(
        self,
        server: ServerConfig,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        key: str,
        errors: list[str],
        tries: list[dict[str, Any]],
        last: bool = True,
    ) -> LLMResult | None:
        """One server: retries with exponential backoff and full jitter; None = failed.

        A timeout is retried only on the role's ``last`` server (``timeout_retries``
        times): while another server remains, a server that let a request time out is
        left at once, so a dead-silent server costs one ``timeout_s``, not several.
        """
        import openai  # imported lazily: the CLI's evaluate path never needs it

        def record(outcome: str, status: int | None, detail: str, t0: float, wait: float = 0):
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
        max_tokens = self._fit(server, messages, params["max_tokens"])
        if max_tokens == 0:
            why = (
                f"prompt of about {estimate_prompt_tokens(messages)} tokens does not fit the "
                f"{self.context_tokens(server)}-token context of server '{server.name}' "
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
        mode = "none"
        if "json_schema" in params:
            mode = self.known(server).get("structured_output") or "json_schema"
            if mode not in STRUCTURED_MODES or server.structured_output is False:
                mode = "none" if server.structured_output is False else "json_schema"
        attempt = timeouts = 0
        while True:
            fmt = dict(extra)
            if mode == "json_schema":
                fmt["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": params["json_schema"]},
                }
            elif mode == "json_object":
                fmt["response_format"] = {"type": "json_object"}
            t0 = time.time()
            try:
                with server_slot(self.lock_dir, server):
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
                        self.state.update(server, structured_output=new)
                    mode = new
                    continue
                if outcome == "context":
                    learned = _CONTEXT_NUMBER.search(str(exc))
                    if learned and not server.context_tokens:
                        self.state.update(
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
                    give_up = timeouts >= (self.cfg.timeout_retries if last else 0)
                    timeouts += 1
                elif outcome in TRANSIENT:
                    give_up = attempt >= self.cfg.max_retries
                else:
                    give_up = True
                if give_up:
                    record(outcome, status, text, t0)
                    if outcome in ("timeout", "connection"):
                        self.state.update(server, down_since=round(time.time(), 3))
                    return None
                attempt += 1
                wait = backoff_s(attempt)
                record(outcome, status, text, t0, wait)
                time.sleep(wait)
                continue
            break
        record("ok", 200, "", t0)
        if self.known(server).get("down_since"):
            self.state.update(server, down_since=None)
        choice = resp.choices[0]
        usage = resp.usage
        details = getattr(usage, "completion_tokens_details", None) if usage else None
        text = choice.message.content or ""
        reasoning = _message_reasoning(choice.message)
        cut = max(0, len(text) - MAX_ANSWER_CHARS)
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
            answer_cut_chars=cut,
        )


def backoff_s(attempt: int, base: float = 0.5, cap: float = 20.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0.0, min(cap, base * 2**attempt))


def pool_from_env(cfg: LLMConfig) -> LLMPool:
    """A pool whose lock dir can be moved by ``HPCAGENTS_LOCK_DIR`` (node-local disks)."""
    lock_dir = os.environ.get("HPCAGENTS_LOCK_DIR")
    return LLMPool(cfg, Path(lock_dir) if lock_dir else None)
