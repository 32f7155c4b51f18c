"""The LLM pool: several servers of any kind, a response cache, per-server caps.

Why each piece exists:

* **Roles and deterministic assignment.** Each server serves the PM, the PGs or both;
  request slot ``index`` goes to server ``index mod S`` among the servers of its role, so
  a campaign's load spread is reproducible; **failover** walks the role's other servers
  in order when one is down, so a dead GPU node costs latency, not the campaign. A
  server that just left a request unanswered is asked last for a while.
* **One backend per server kind** (:data:`BACKENDS`): the pool decides which server is
  asked and what becomes of the answer; how a server of a kind is asked (its request,
  its quirks, what its errors mean) is its backend's business
  (:mod:`hpcagents.llm.openai_http`, :mod:`hpcagents.llm.files`), through the one
  interface of :mod:`hpcagents.llm.interface`. The pool lends a backend what it needs
  (:class:`~hpcagents.llm.interface.Host`): the probe's per-server state, the context
  length, a concurrency slot.
* **Per-server concurrency caps** are file locks, because every Snakemake job is its own
  process: an in-process semaphore would cap nothing.
* **The response cache** (:mod:`hpcagents.llm.cache`) is content-addressed by the
  request (preferred model, messages, sampling parameters, seed). A rerun after a kill
  replays answers it already paid for, and ``offline`` mode replays a whole archived
  campaign with no server at all. An identical request already **in flight** (another
  job, or a killed run's orphaned job) is waited for through a file lock keyed by the
  request, never sent twice; the lock dies with its process, so a killed sender blocks
  nobody.
* **Every try is recorded** (server, outcome, wall-clock start and end, backoff), so the
  time lost to faults is charged to the server that caused it; when no server answers,
  the error names what each said and what to do about it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hpcagents.llm import files, openai_http
from hpcagents.llm.cache import ResponseCache
from hpcagents.llm.interface import (
    CONTEXT_MARGIN,
    TRANSIENT,
    Backend,
    LLMResult,
    LLMUnavailable,
    PromptTooLong,
    Request,
    request_key,
    sentence,
)
from hpcagents.llm.probe import ServerState
from hpcagents.spec.config import LLMConfig, ServerConfig

#: The backend of each server kind (``ServerConfig.kind``): OpenAI-compatible HTTP, or
#: [feedback] a queue folder that a person or an air-gapped model answers.
BACKENDS: dict[str, Backend] = {"openai": openai_http, "files": files}
#: A server that hung or refused a request is asked last for this many of its timeouts.
DOWN_HOLD_FACTOR = 2.0


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


def _advice(outcomes: set[str]) -> str:
    """What the user should do, from how the tries failed (the outcomes every backend
    records: see :func:`hpcagents.llm.openai_http.classify` and :mod:`hpcagents.llm.files`)."""
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
    if outcomes & {*TRANSIENT, "timeout"}:
        parts.append("rerun to resume once a server answers")
    if outcomes & {"no_api_key", "http_401", "http_403"}:
        parts.append("check each server's api_key_env")
    if "http_404" in outcomes:
        parts.append("check each server's model and base_url (hpcagents check-config --servers)")
    if outcomes & {"context", "not_sent_context"}:
        parts.append("some servers' context is too small for this prompt")
    return "; ".join(parts) or "see the errors above"


class LLMPool:
    """Send chat requests to the configured servers with caching, caps and failover.

    The pool is also the :class:`~hpcagents.llm.interface.Host` its backends answer
    through (:meth:`known`, :meth:`learn`, :meth:`context_tokens`, :meth:`slot`).
    """

    def __init__(self, cfg: LLMConfig, lock_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.cache = ResponseCache(cfg.cache_dir)
        self.lock_dir = lock_dir or cfg.cache_dir / ".slots"
        self.state = ServerState(cfg.state_dir)
        self._ctx: dict[str, int | None] = {}

    # -- what is known about a server ---------------------------------------------

    def known(self, server: ServerConfig) -> dict[str, Any]:
        """What the probe (and every job since) learned of ``server``; empty if nothing."""
        return self.state.load(server)

    def learn(self, server: ServerConfig, **fields: Any) -> None:
        """Remember ``fields`` of ``server`` in the campaign's state, for every job."""
        self.state.update(server, **fields)

    def context_tokens(self, server: ServerConfig) -> int | None:
        """The server's context length: config, else what the probe (or an overflow
        error) taught, else what the server states when asked now (once per pool);
        None if unknown. A file queue states none: whoever answers the files fits the
        prompt to their model."""
        if server.context_tokens:
            return server.context_tokens
        known = self.known(server).get("context_tokens")
        if known:
            return int(known)
        if self.cfg.offline:
            return None
        if server.name not in self._ctx:
            self._ctx[server.name] = backend(server).stated_context(server)
        return self._ctx[server.name]

    def slot(self, server: ServerConfig) -> AbstractContextManager[int]:
        """Hold one of ``server``'s concurrency slots (see :func:`server_slot`)."""
        return server_slot(self.lock_dir, server)

    def max_tokens(self, role: str) -> int:
        return self.cfg.role(role).max_tokens or self.cfg.max_tokens

    def prompt_budget(self, index: int, role: str = "pg") -> int | None:
        """Prompt tokens that fit the preferred server beside the completion and a margin.

        The completion's room is capped at half the context, so a ``max_tokens`` as large
        as the context still leaves the prompt half of it (the request then asks for less
        completion, see :func:`~hpcagents.llm.interface.completion_room`), instead of a
        budget too small for any prompt.
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
            request = Request(
                messages,
                params,
                key,
                role,
                errors,
                tries,
                max_retries=self.cfg.max_retries,
                # a timeout is retried only on the role's last server: while another
                # remains, a dead-silent server costs one timeout_s, not several
                timeout_retries=self.cfg.timeout_retries if last else 0,
            )
            result = backend(server).ask(server, request, self)
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


def backend(server: ServerConfig) -> Backend:
    """The backend that talks to ``server``'s kind."""
    return BACKENDS[server.kind]


def pool_from_env(cfg: LLMConfig) -> LLMPool:
    """A pool whose lock dir can be moved by ``HPCAGENTS_LOCK_DIR`` (node-local disks)."""
    lock_dir = os.environ.get("HPCAGENTS_LOCK_DIR")
    return LLMPool(cfg, Path(lock_dir) if lock_dir else None)
