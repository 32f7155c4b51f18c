"""The other side of a file queue: answer its requests with a model server that only
that side can reach (an air-gapped network, a workstation), then carry the folder back.

    python -m hpcagents.llm.answer_queue QUEUE_DIR --base-url http://gpu:8000/v1 \\
        --model openai/gpt-oss-120b [--api-key-env VAR] [--watch] [--structured]

Why: the campaign (hpcagents.llm.files) writes each request as ``<id>.request.json``
(messages and parameters); on a network with a model server but without the campaign,
this script sends each waiting request to that server exactly as the campaign would
have (same messages, temperature, max_tokens, seed, reasoning_effort) and writes the
server's whole chat-completion response as ``<id>.answer.json`` (atomically), which the
campaign reads with its token counts, reasoning and finish reason. ``--watch`` keeps
answering new requests (a shared folder); without it, one pass over what is waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import write_text_atomic
from hpcagents.llm.files import ANSWER_SUFFIXES


def waiting(queue: Path) -> list[Path]:
    """Request files in ``queue`` that have no answer yet, oldest first."""
    out = []
    for req in sorted(queue.glob("*.request.json"), key=lambda p: p.stat().st_mtime):
        rid = req.name[: -len(".request.json")]
        if not any((queue / f"{rid}{s}").exists() for s in ANSWER_SUFFIXES):
            out.append(req)
    return out


def answer(request: Path, client: Any, model: str, structured: bool) -> str:
    """Send one request to the server; write its response beside it. Returns the id."""
    data = json.loads(request.read_text())
    params = data.get("params") or {}
    extra: dict[str, Any] = {}
    if params.get("reasoning_effort"):
        extra["reasoning_effort"] = params["reasoning_effort"]
    if structured and "json_schema" in params:
        extra["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": params["json_schema"]},
        }
    resp = client.chat.completions.create(
        model=model,
        messages=data["messages"],
        temperature=params.get("temperature", 0.7),
        max_tokens=params.get("max_tokens", 8192),
        seed=params.get("seed"),
        **extra,
    )
    rid = data["id"]
    write_text_atomic(request.with_name(f"{rid}.answer.json"), resp.model_dump_json(indent=1))
    return rid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpcagents.llm.answer_queue", description=__doc__.splitlines()[0]
    )
    parser.add_argument("queue", type=Path, help="the campaign's queue_dir (or a copy of it)")
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible, ending in /v1")
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key-env", help="env var holding the API key (default: none)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per request")
    parser.add_argument("--watch", action="store_true", help="keep answering new requests")
    parser.add_argument(
        "--structured", action="store_true", help="ask for the PM's JSON schema (response_format)"
    )
    args = parser.parse_args(argv)
    import openai

    key = os.environ.get(args.api_key_env, "") if args.api_key_env else "not-needed"
    if not key:
        print(f"answer_queue: {args.api_key_env} is unset or empty", file=sys.stderr)
        return 2
    if not args.queue.is_dir():
        print(f"answer_queue: {args.queue} is not a folder", file=sys.stderr)
        return 2
    client = openai.OpenAI(base_url=args.base_url, api_key=key, timeout=args.timeout)
    done = 0
    while True:
        for request in waiting(args.queue):
            try:
                rid = answer(request, client, args.model, args.structured)
            except openai.APIError as exc:
                print(f"answer_queue: {request.name}: {exc}", file=sys.stderr)
                continue
            done += 1
            print(f"answered {rid}", flush=True)
        if not args.watch:
            break
        time.sleep(1.0)
    print(f"{done} request(s) answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
