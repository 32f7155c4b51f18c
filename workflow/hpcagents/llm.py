"""The LLM pool: several OpenAI-compatible servers, a response cache, per-server caps.

Why each piece exists:

* **Deterministic assignment** (PG j → server j mod S) makes a campaign's load spread
  reproducible; **failover** walks the other servers in order when one is down, so a
  dead GPU node costs latency, not the campaign.
* **Per-server concurrency caps** are file locks, because every Snakemake job is its own
  process: an in-process semaphore would cap nothing.
* **The response cache** is content-addressed by the request (preferred model, messages,
  sampling parameters, seed). A rerun after a kill replays answers it already paid for,
  and ``offline`` mode replays a whole archived campaign with no server at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import read_json, write_json
from .config import LLMConfig, ServerConfig


class LLMUnavailable(RuntimeError):
    """No server could answer (or, offline, the cache has no answer): stop cleanly."""


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
    failover: bool = False  # answered by another server than the PG's own
    # Wall clock (Unix seconds) of the request's first try and of its final answer, as
    # seen by this process: the campaign's parallelism (requests in flight, server busy
    # fractions, the critical path) is computed from these, not from a benchmark.
    started_at: float = 0.0
    ended_at: float = 0.0

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


class LLMPool:
    """Send chat requests to the configured servers with caching, caps and failover."""

    def __init__(self, cfg: LLMConfig, lock_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.cache = ResponseCache(cfg.cache_dir)
        self.lock_dir = lock_dir or cfg.cache_dir / ".slots"

    def context_tokens(self, server: ServerConfig) -> int | None:
        """The server's context length: from config, else as ``/v1/models`` reports it
        (vLLM: ``max_model_len``; llama.cpp: ``meta.n_ctx_train``); None if unknown."""
        if server.context_tokens:
            return server.context_tokens
        if self.cfg.offline:
            return None
        import urllib.request

        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as resp:
                data = json.loads(resp.read()).get("data") or []
        except (OSError, ValueError):
            return None
        for model in data:
            if model.get("id") == server.model or len(data) == 1:
                value = model.get("max_model_len") or (model.get("meta") or {}).get("n_ctx_train")
                return int(value) if value else None
        return None

    def prompt_budget(self, index: int) -> int | None:
        """Prompt tokens that fit the preferred server beside the completion (and a margin)."""
        ctx = self.context_tokens(self.order(index)[0])
        if ctx is None:
            return None
        return max(256, ctx - self.cfg.max_tokens - 256)

    def order(self, index: int) -> list[ServerConfig]:
        """Preferred server for request slot ``index`` first, then the others in turn."""
        servers = list(self.cfg.servers)
        start = index % len(servers)
        return servers[start:] + servers[:start]

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        index: int,
        seed: int,
        max_tokens: int | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> LLMResult:
        """Answer ``messages``: from the cache if this exact request was answered before.

        ``json_schema`` asks servers that support structured output (vLLM, SGLang,
        llama.cpp) to constrain the answer; a server that rejects ``response_format`` is
        asked again without it (the caller validates the JSON either way).
        """
        order = self.order(index)
        params: dict[str, Any] = {
            "temperature": self.cfg.temperature,
            "max_tokens": max_tokens or self.cfg.max_tokens,
            "seed": seed,
        }
        if json_schema is not None:
            params["json_schema"] = json_schema
        key = request_key(order[0].model, messages, params)
        # The slot names the request's place in the campaign (model, seed, PG index):
        # prompts quote measured GFLOP/s, so a replay's prompts differ in those figures,
        # and offline replay answers by slot when the exact prompt is not in the cache.
        slot = request_key(
            order[0].model, [], {"seed": seed, "index": index, "json": json_schema is not None}
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
        if self.cfg.offline:
            raise LLMUnavailable(
                f"offline replay: no cached answer for request {key[:16]} "
                f"(cache {self.cfg.cache_dir}); the archived campaign does not contain it"
            )
        errors: list[str] = []
        retries = 0
        started_at = time.time()
        for server in order:
            try:
                result = self._ask(server, messages, params, key, errors)
            except _ServerFailed as failed:
                retries += failed.attempts
                continue
            result.retries += retries
            result.errors = errors
            result.failover = server.name != order[0].name
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
        raise LLMUnavailable(
            "no LLM server answered: "
            + " | ".join(errors[-6:])
            + ". Rerun to resume once a server is up."
        )

    def _ask(
        self,
        server: ServerConfig,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        key: str,
        errors: list[str],
    ) -> LLMResult:
        """One server: ``max_retries`` retries with exponential backoff and full jitter."""
        import openai  # imported lazily: the CLI's evaluate path never needs it

        client = openai.OpenAI(
            base_url=server.base_url,
            api_key=server.api_key(),
            timeout=server.timeout_s,
            max_retries=0,  # retries are ours: counted, recorded, with jitter
        )
        extra: dict[str, Any] = {}
        if server.reasoning_effort:
            extra["reasoning_effort"] = server.reasoning_effort
        if "json_schema" in params and server.structured_output is not False:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": params["json_schema"]},
            }
        transient = (
            openai.APIConnectionError,  # includes timeouts
            openai.RateLimitError,
            openai.InternalServerError,
        )
        attempt = 0
        while True:
            try:
                with server_slot(self.lock_dir, server):
                    start = time.monotonic()
                    resp = client.chat.completions.create(
                        model=server.model,
                        messages=messages,  # type: ignore[arg-type]
                        temperature=params["temperature"],
                        max_tokens=params["max_tokens"],
                        seed=params["seed"],
                        **extra,
                    )
                    latency = time.monotonic() - start
                if not resp.choices:
                    raise ValueError("the response has no choices")
                break
            except openai.BadRequestError as exc:
                if "response_format" in extra:
                    errors.append(
                        f"{server.name}: structured output refused, asked without: {str(exc)[:200]}"
                    )
                    extra.pop("response_format")
                    continue
                errors.append(f"{server.name}: {type(exc).__name__}: {str(exc)[:300]}")
                raise _ServerFailed(attempt) from exc
            except (*transient, openai.APIStatusError, ValueError) as exc:
                errors.append(f"{server.name}: {type(exc).__name__}: {str(exc)[:300]}")
                if not isinstance(exc, transient) or attempt >= self.cfg.max_retries:
                    raise _ServerFailed(attempt) from exc
                attempt += 1
                time.sleep(backoff_s(attempt))
        choice = resp.choices[0]
        usage = resp.usage
        details = getattr(usage, "completion_tokens_details", None) if usage else None
        return LLMResult(
            text=choice.message.content or "",
            reasoning=_message_reasoning(choice.message),
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
            retries=attempt,
        )


class _ServerFailed(Exception):
    """One server gave up after ``attempts`` retries (the error text is in ``errors``)."""

    def __init__(self, attempts: int) -> None:
        super().__init__(attempts)
        self.attempts = attempts


def backoff_s(attempt: int, base: float = 0.5, cap: float = 20.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0.0, min(cap, base * 2**attempt))


def pool_from_env(cfg: LLMConfig) -> LLMPool:
    """A pool whose lock dir can be moved by ``HPCAGENTS_LOCK_DIR`` (node-local disks)."""
    lock_dir = os.environ.get("HPCAGENTS_LOCK_DIR")
    return LLMPool(cfg, Path(lock_dir) if lock_dir else None)
