"""Answers a file queue (kind: files) with the scripted model: a stand-in for the person
or the air-gapped model that would answer it, used by tests and the file-queue demo.

    python tests/files_answerer.py QUEUE_DIR [--idle-exit S] [--delay S]

Each ``<id>.request.json`` in QUEUE_DIR gets ``<id>.answer.json`` (written under another
name and renamed, as the protocol asks), labelled ``scripted-stand-in``: it measures the
pipeline, never an LLM.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from hpcagents.scripted import ScriptedModel  # noqa: E402 - after the path is set

MODEL = "scripted-stand-in (file-queue answerer)"


def answer_one(model: ScriptedModel, request: Path) -> str:
    """Write the answer to one request file; returns its id."""
    data = json.loads(request.read_text())
    rid = data["id"]
    reply = model.answer(data["messages"], seed=data["params"].get("seed"))
    tmp = request.with_name(f".{rid}.answer.tmp")
    tmp.write_text(json.dumps({"content": reply.text, "model": MODEL, "finish_reason": "stop"}))
    os.replace(tmp, request.with_name(f"{rid}.answer.json"))
    return rid


def serve(
    queue: Path,
    stop: threading.Event,
    delay_s: float = 0.0,
    idle_exit_s: float | None = None,
    answered: list[str] | None = None,
) -> list[str]:
    """Answer every request that appears until ``stop`` is set (or the queue has been
    idle for ``idle_exit_s``); returns the ids answered."""
    model = ScriptedModel()
    done: list[str] = answered if answered is not None else []
    last = time.monotonic()
    while not stop.is_set():
        for request in sorted(queue.glob("*.request.json")) if queue.is_dir() else []:
            rid = request.name[: -len(".request.json")]
            if rid in done or (queue / f"{rid}.answer.json").exists():
                continue
            time.sleep(delay_s)
            try:
                done.append(answer_one(model, request))
            except FileNotFoundError:
                continue  # answered and moved meanwhile
            last = time.monotonic()
        if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
            break
        time.sleep(0.05)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue", type=Path)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after S idle")
    args = parser.parse_args()
    done = serve(args.queue, threading.Event(), args.delay, args.idle_exit)
    print(f"answered {len(done)} request(s): {' '.join(done)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
