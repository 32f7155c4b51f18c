"""The file-queue LLM backend (``kind: files``): a person, or a model on a network no
server of this campaign can reach, answers the agents' requests through files.

Why: the users this project is for keep code away from networks; some cannot reach any
model server from where the campaign runs (an air-gapped cluster, a model on another
network), and a person may want to answer a few prompts with a capable model by hand.
The campaign stays the same (plan, N PGs in parallel, repair, time, select); only the
transport changes: this module is one of the pool's backends, with the same :func:`ask`
as :mod:`hpcagents.llm.openai_http` (:class:`hpcagents.llm.interface.Backend`).

The protocol (also in config/README.md), in the server's ``queue_dir``:

* Each request is written, atomically, as two files named by its **request id**
  (``<role>-<first 16 hex of the cache key>``): ``<id>.request.md``, the prompt a
  person reads (role, model parameters, where to answer, then every message in full),
  and ``<id>.request.json``, the same as data (``messages``, ``params``) for a script
  that forwards it to a model. The ``.json`` is written last: once it is there, so is
  the ``.md``.
* The answer is ``<id>.answer.md`` (or ``.txt``): the reply as is; or
  ``<id>.answer.json``: ``{"content": "...", "reasoning": "...", "model": "...",
  "prompt_tokens": n, "completion_tokens": n, "finish_reason": "stop"}`` (only
  ``content`` is required) or an OpenAI chat-completion object as a server returns it.
  Write it under another name and rename it (an answer is read once it has not changed
  for a moment, but a rename is the sure way).
* An answered request's files move to ``answered/``. An answer that cannot be read is
  renamed ``<id>.answer.*.rejected`` with the reason in ``<id>.problem.txt``, and the
  request waits for a new answer.
* A step waits for its answer up to the server's ``timeout_s``, then stops with a
  message naming the request files; the request stays queued. A rerun finds the answer
  (in the queue, in ``answered/``, or in the response cache) and resumes: nothing
  answered is asked twice. N PGs in parallel are N request files at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import write_json, write_text_atomic
from hpcagents.llm.interface import (
    MAX_ANSWER_CHARS,
    MAX_REASONING_CHARS,
    Host,
    LLMResult,
    Request,
    ServerCaps,
    estimate_prompt_tokens,
)
from hpcagents.spec.config import ServerConfig

#: Seconds an answer file must stay unchanged before it is read (a writer that does not
#: rename is not read half-way).
SETTLE_S = 0.5
ANSWER_SUFFIXES = (".answer.md", ".answer.txt", ".answer.json")

README = """\
hpcagents file queue
====================

Every *.request.md here is a prompt waiting for an answer (the same request as data in
*.request.json: messages and parameters, for a script that forwards it to a model).

Answer a request <id> by writing ONE of these files in this folder:
  <id>.answer.md    the model's reply, as is (plain text; code in a ```c block)
  <id>.answer.json  {"content": "the reply", "reasoning": "...", "model": "...",
                     "prompt_tokens": 0, "completion_tokens": 0, "finish_reason": "stop"}
                    (only content is required), or an OpenAI chat-completion response
Write it under another name first and rename it into place.

Answered requests move to answered/. A request whose campaign step stopped waiting
stays here: answer it and rerun the campaign; answers already given are never asked
again (the response cache replays them).
"""


class BadAnswer(ValueError):
    """An answer file that cannot be used; the message says why and what to write."""


@dataclass
class Answer:
    text: str
    reasoning: str = ""
    model: str = ""
    finish_reason: str | None = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int = 0
    path: Path | None = None
    written_at: float = 0.0


def request_id(role: str, key: str) -> str:
    """The request's file name stem: the role, then the request's content address."""
    return f"{role or 'llm'}-{key[:16]}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def request_markdown(
    rid: str,
    role: str,
    server: ServerConfig,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    queue: Path,
    created_at: float,
) -> str:
    """The prompt file a person reads: what to do, the parameters, then every message."""
    lines = [
        f"# hpcagents request {rid} ({(role or 'llm').upper()})",
        "",
        "Answer by writing the model's reply to ONE of:",
        f"    {queue / (rid + '.answer.md')}    (plain text, the reply as is)",
        f"    {queue / (rid + '.answer.json')}  (JSON, see README.txt in this folder)",
        "Write it under another name first, then rename it into place.",
        "",
        f"- model: {server.model} (server '{server.name}')",
        f"- temperature: {params.get('temperature')}, max_tokens: {params.get('max_tokens')}, "
        f"seed: {params.get('seed')}"
        + (
            f", reasoning_effort: {params['reasoning_effort']}"
            if params.get("reasoning_effort")
            else ""
        ),
        f"- asked at: {_iso(created_at)}; the campaign step waits {server.timeout_s:g} s, "
        "then stops; a rerun resumes the wait",
    ]
    if "json_schema" in params:
        lines += [
            "- the reply must be ONE JSON object matching this schema (a ```json block is fine):",
            "",
            "```json",
            json.dumps(params["json_schema"], indent=2),
            "```",
        ]
    for i, m in enumerate(messages, 1):
        lines += ["", f"===== message {i}: {m['role']} =====", "", m["content"].rstrip()]
    lines += ["", "===== end of request =====", ""]
    return "\n".join(lines)


def parse_answer(path: Path) -> Answer:
    """Read an answer file (plain text, or JSON in one of the two documented forms)."""
    raw = path.read_text(errors="replace")
    written = path.stat().st_mtime
    if path.name.endswith(".json"):
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BadAnswer(
                f"{path.name} is not valid JSON ({exc}); write the reply as JSON "
                '{"content": "..."} or as plain text in a .answer.md file'
            ) from None
        if isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"]:
            choice = data["choices"][0] if isinstance(data["choices"][0], dict) else {}
            message = choice.get("message") or {}
            usage = data.get("usage") or {}
            details = usage.get("completion_tokens_details") or {}
            content = message.get("content")
            if not isinstance(content, str):
                raise BadAnswer(f"{path.name}: choices[0].message.content is not a string")
            return Answer(
                text=content,
                reasoning=message.get("reasoning_content") or message.get("reasoning") or "",
                model=str(data.get("model") or ""),
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                reasoning_tokens=int(details.get("reasoning_tokens") or 0),
                path=path,
                written_at=written,
            )
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            raise BadAnswer(
                f'{path.name}: expected a JSON object with a "content" string (or an OpenAI '
                "chat-completion response with choices[0].message.content)"
            )
        for key in ("prompt_tokens", "completion_tokens"):
            if data.get(key) is not None and not isinstance(data[key], int):
                raise BadAnswer(f"{path.name}: {key} must be an integer")
        return Answer(
            text=data["content"],
            reasoning=str(data.get("reasoning") or ""),
            model=str(data.get("model") or ""),
            finish_reason=data.get("finish_reason") or "stop",
            prompt_tokens=data.get("prompt_tokens"),
            completion_tokens=data.get("completion_tokens"),
            path=path,
            written_at=written,
        )
    if not raw.strip():
        raise BadAnswer(f"{path.name} is empty; write the model's reply into it")
    return Answer(text=raw, path=path, written_at=written)


class FileQueue:
    """One server's queue folder."""

    def __init__(self, queue_dir: Path, poll_s: float = 2.0) -> None:
        self.dir = Path(queue_dir)
        self.answered = self.dir / "answered"
        self.poll_s = poll_s

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        readme = self.dir / "README.txt"
        if not readme.is_file():
            write_text_atomic(readme, README)

    def submit(
        self,
        rid: str,
        role: str,
        server: ServerConfig,
        messages: list[dict[str, str]],
        params: dict[str, Any],
    ) -> float:
        """Write the request (unless it is already queued: a rerun resumes); returns the
        time it was first asked."""
        self.prepare()
        data_path = self.dir / f"{rid}.request.json"
        if data_path.is_file():
            try:
                return float(json.loads(data_path.read_text())["created_at"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable: written again below
        created = time.time()
        answers = [str(self.dir / (rid + s)) for s in ANSWER_SUFFIXES]
        # The prompt first, its data last: whoever sees the .json finds the .md beside it,
        # and a rerun that finds the .json knows the request is whole.
        write_text_atomic(
            self.dir / f"{rid}.request.md",
            request_markdown(rid, role, server, messages, params, self.dir, created),
        )
        write_json(
            data_path,
            {
                "id": rid,
                "role": role,
                "server": server.name,
                "model": server.model,
                "messages": messages,
                "params": params,
                "answer_to": answers,
                "created_at": created,
                "created": _iso(created),
                "timeout_s": server.timeout_s,
            },
        )
        return created

    def find_answer(self, rid: str) -> Path | None:
        """An answer file for ``rid`` that has settled, in the queue or in answered/."""
        now = time.time()
        for folder in (self.dir, self.answered):
            for suffix in ANSWER_SUFFIXES:
                path = folder / f"{rid}{suffix}"
                try:
                    if now - path.stat().st_mtime >= SETTLE_S or folder == self.answered:
                        return path
                except OSError:
                    continue
        return None

    def reject(self, rid: str, path: Path, why: str) -> None:
        """Set a bad answer aside (so a new one can be written) and say why, beside it."""
        path.rename(path.with_name(path.name + ".rejected"))
        write_text_atomic(
            self.dir / f"{rid}.problem.txt",
            f"{_iso(time.time())}: the answer {path.name} was set aside: {why}\n"
            f"Write a new answer for {rid}.\n",
        )

    def done(self, rid: str) -> None:
        """Move the request and its answer to answered/ (kept for the record)."""
        self.answered.mkdir(parents=True, exist_ok=True)
        for path in self.dir.glob(f"{rid}.*"):
            if path.is_file():
                path.replace(self.answered / path.name)

    def pending(self) -> list[str]:
        """Request ids waiting for an answer, oldest first."""
        reqs = sorted(self.dir.glob("*.request.json"), key=lambda p: p.stat().st_mtime)
        return [p.name[: -len(".request.json")] for p in reqs]


def wait_for_answer(queue: FileQueue, rid: str, deadline: float) -> tuple[Answer | None, list[str]]:
    """Poll until an answer for ``rid`` is there or ``deadline`` (time.time()) passes.
    Returns the answer (None at the deadline) and the problems met on the way."""
    problems: list[str] = []
    while True:
        path = queue.find_answer(rid)
        if path is not None:
            try:
                return parse_answer(path), problems
            except (BadAnswer, OSError) as exc:
                problems.append(str(exc))
                if path.parent == queue.dir:
                    queue.reject(rid, path, str(exc))
                else:  # a bad answer already moved to answered/: stop looking there
                    path.rename(path.with_name(path.name + ".rejected"))
        left = deadline - time.time()
        if left <= 0:
            return None, problems
        time.sleep(min(queue.poll_s, left))


def ask(server: ServerConfig, request: Request, host: Host) -> LLMResult | None:
    """One request through the queue: an ``LLMResult``, or None (``request.errors`` says
    why) when no answer came within the server's ``timeout_s``; the request stays queued.

    ``host`` is not needed: a queue has no concurrency cap, no context to fit, nothing
    to learn, and its one try is never retried (a rerun resumes the wait).
    """
    messages, params, key, role = request.messages, request.params, request.key, request.role
    errors, tries = request.errors, request.tries
    assert server.queue_dir is not None
    queue = FileQueue(server.queue_dir, server.poll_s)
    rid = request_id(role, key)
    t0 = time.time()
    try:
        created = queue.submit(rid, role, server, messages, params)
    except OSError as exc:
        why = f"cannot write the request into {queue.dir}: {exc}"
        errors.append(f"{server.name}: {why}")
        tries.append(_try(server, "files_unwritable", why, t0))
        return None
    answer, problems = wait_for_answer(queue, rid, t0 + server.timeout_s)
    for p in problems:
        errors.append(f"{server.name}: answer to {rid} set aside: {p}")
    if answer is None:
        why = (
            f"no answer to request {rid} within {server.timeout_s:g} s: it waits in "
            f"{queue.dir / (rid + '.request.md')}; write {rid}.answer.md (or .json) beside it "
            "and rerun"
        )
        errors.append(f"{server.name}: {why}")
        tries.append(_try(server, "files_unanswered", why, t0))
        return None
    estimated = answer.prompt_tokens is None or answer.completion_tokens is None
    tries.append(
        _try(
            server,
            "ok",
            f"answered in {answer.path.name if answer.path else '?'}"
            + ("; tokens estimated (3 characters a token)" if estimated else ""),
            t0,
        )
    )
    queue.done(rid)
    # [MAX_ANSWER_CHARS] as the HTTP path: a runaway answer is cut before it is stored

    text = answer.text
    return LLMResult(
        text=text[:MAX_ANSWER_CHARS],
        reasoning=answer.reasoning[:MAX_REASONING_CHARS],
        server=server.name,
        model=answer.model or server.model,
        base_url=server.base_url,
        finish_reason=answer.finish_reason,
        prompt_tokens=answer.prompt_tokens
        if answer.prompt_tokens is not None
        else estimate_prompt_tokens(messages),
        completion_tokens=answer.completion_tokens
        if answer.completion_tokens is not None
        else len(text) // 3,
        reasoning_tokens=answer.reasoning_tokens,
        # from the request's first writing to the answer file's: the answerer's time,
        # across a stop and a rerun
        latency_s=round(max(0.0, answer.written_at - created), 4),
        cache_key=key,
        cached=False,
        response_format="none",
        tokens_estimated=estimated,
        answer_cut_chars=max(0, len(text) - MAX_ANSWER_CHARS),
    )


def _try(server: ServerConfig, outcome: str, detail: str, t0: float) -> dict[str, Any]:
    return {
        "server": server.name,
        "outcome": outcome,
        "status": None,
        "detail": detail[:300],
        "started_at": round(t0, 4),
        "ended_at": round(time.time(), 4),
        "backoff_s": 0.0,
    }


def stated_context(server: ServerConfig) -> int | None:
    """None: a queue states no context; whoever answers fits the prompt to their model."""
    return None


def probe(server: ServerConfig) -> ServerCaps:
    """What the start-up probe records for a file queue: usable when its folder can be
    created and written (no model can be asked at start: a person may answer later)."""

    caps = ServerCaps(server.name, server.base_url, server.model, probed_at=round(time.time(), 3))
    caps.kind = "files"
    caps.context_tokens = server.context_tokens
    caps.context_source = "config" if server.context_tokens else "unknown"
    caps.structured_output = "none"
    assert server.queue_dir is not None
    queue = FileQueue(server.queue_dir, server.poll_s)
    try:
        queue.prepare()
        write_text_atomic(queue.dir / ".probe", "hpcagents can write here\n")
        (queue.dir / ".probe").unlink()
    except OSError as exc:
        caps.usable = False
        caps.reason = (
            f"server '{server.name}' (llm.servers): its queue_dir {queue.dir} cannot be "
            f"written ({exc}); give a folder this user can create and write"
        )
        return caps
    caps.reachable = True
    pending = queue.pending()
    caps.notes.append(
        f"file queue {queue.dir}: requests are answered by files (each step waits up to "
        f"{server.timeout_s:g} s)"
        + (f"; {len(pending)} request(s) already waiting" if pending else "")
    )
    return caps
