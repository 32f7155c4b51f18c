"""The host-wide timing lock: builders overlap, a timer runs alone and is not starved.

Ordered by the lock's own state (is the turnstile held? is a process inside?), never by
sleeps, so the tests hold on a loaded machine.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import time
from pathlib import Path

from hpcagents.judge import timinglock

CTX = mp.get_context("fork")


def _worker(kind: str, directory: str, log: str, name: str, inside, release) -> None:  # noqa: ANN001
    ctx = timinglock.exclusive if kind == "exclusive" else timinglock.shared
    with ctx(Path(directory)):
        with open(log, "a") as fh:
            fh.write(f"{name} in\n")
        inside.set()
        release.wait(30)
        with open(log, "a") as fh:
            fh.write(f"{name} out\n")


class Worker:
    def __init__(self, tmp_path: Path, name: str, kind: str) -> None:
        self.inside, self.release = CTX.Event(), CTX.Event()
        self.proc = CTX.Process(
            target=_worker,
            args=(kind, str(tmp_path), str(tmp_path / "log"), name, self.inside, self.release),
        )
        self.proc.start()

    def finish(self) -> None:
        self.release.set()
        self.proc.join(30)
        assert self.proc.exitcode == 0


def _turnstile_held(directory: Path) -> bool:
    fd = os.open(directory / "turnstile.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _events(tmp_path: Path) -> list[str]:
    return (tmp_path / "log").read_text().split("\n")[:-1]


def test_builders_overlap_each_other(tmp_path):
    b1 = Worker(tmp_path, "b1", "shared")
    assert b1.inside.wait(30)
    b2 = Worker(tmp_path, "b2", "shared")
    assert b2.inside.wait(30), "a second builder could not enter beside the first"
    b1.finish()
    b2.finish()


def test_a_timer_waits_for_builders_runs_alone_and_is_not_overtaken(tmp_path):
    b1 = Worker(tmp_path, "b1", "shared")
    assert b1.inside.wait(30)
    timer = Worker(tmp_path, "t", "exclusive")
    deadline = time.monotonic() + 30
    while not _turnstile_held(tmp_path):  # the timer is queued, holding the turnstile
        assert time.monotonic() < deadline
        time.sleep(0.01)
    b2 = Worker(tmp_path, "b2", "shared")
    assert not timer.inside.wait(0.3), "the timer entered while a builder was inside"
    b1.finish()
    assert timer.inside.wait(30)
    assert not b2.inside.wait(0.3), "a builder entered while the timer was timing"
    timer.finish()
    b2.finish()
    events = _events(tmp_path)
    assert events.index("t in") > events.index("b1 out")
    assert events.index("b2 in") > events.index("t out")
