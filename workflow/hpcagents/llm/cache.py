"""The response cache: every answered request, content-addressed, on disk.

Why: a campaign's answers are what it paid for (GPU hours, a person's time at a file
queue). A rerun after a kill replays the answers it already has instead of asking again;
``offline`` mode replays a whole archived campaign with no server at all, exactly (the
key is :func:`hpcagents.llm.interface.request_key` of the request, and never changes
for a recorded campaign), or by the request's *slot* (its place in the campaign) when a
replay's prompt differs, e.g. in measured timings. An identical request already in
flight in another process is waited for (:meth:`ResponseCache.inflight`), never sent
twice. Kept apart from the pool, which decides when to read and write it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import read_json, write_json


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
        """Store ``entry`` under ``key``, and name it the answer of request ``slot``."""
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
