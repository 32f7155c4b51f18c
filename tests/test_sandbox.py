"""The sandbox itself, bypassing the screens: a program run by it cannot read or write
files outside its work dir nor open a network connection."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.judge.sandbox import Limits, bwrap_status, run_untrusted

PROBE = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    const char *what = argv[1], *arg = argv[2];
    if (!strcmp(what, "read")) {
        FILE *f = fopen(arg, "r");
        printf(f ? "READ-OK\n" : "READ-DENIED\n");
    }
    if (!strcmp(what, "write")) { FILE *f = fopen(arg, "w"); if (f) { fputs("x", f); fclose(f); }
                                  printf(f ? "WRITE-OK\n" : "WRITE-DENIED\n"); }
    if (!strcmp(what, "connect")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(atoi(arg));
        a.sin_addr.s_addr = htonl(0x7f000001);
        int ok = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0;
        printf(ok ? "NET-OK\n" : "NET-DENIED\n");
    }
    return 0;
}
"""

needs_bwrap = pytest.mark.skipif(not bwrap_status()[0], reason=f"no sandbox: {bwrap_status()[1]}")


@pytest.fixture
def probe(tmp_path) -> Path:
    src = tmp_path / "probe.c"
    src.write_text("#include <stdlib.h>\n" + PROBE)
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["gcc", "-O1", str(src), "-o", str(work / "probe")], check=True)
    return work


def run(work: Path, *args: str, use_bwrap: bool = True) -> str:
    res = run_untrusted(
        [str(work / "probe"), *args],
        work,
        {"PATH": "/usr/bin"},
        20,
        Limits(cpu_s=20, memory_mb=512),
        use_bwrap=use_bwrap,
    )
    assert res.returncode == 0, res.output
    return res.output.strip()


@needs_bwrap
def test_files_outside_the_work_dir_cannot_be_read(probe):
    assert run(probe, "read", "/etc/passwd") == "READ-DENIED"
    assert run(probe, "read", str(REPO_DIR / "config" / "config.yaml")) == "READ-DENIED"
    assert run(probe, "read", str(probe / "probe")) == "READ-OK"


@needs_bwrap
def test_files_outside_the_work_dir_cannot_be_written(probe, tmp_path):
    outside = tmp_path / "outside.txt"
    run(probe, "write", str(outside))
    assert not outside.exists()
    assert run(probe, "write", str(probe / "inside.txt")) == "WRITE-OK"
    assert (probe / "inside.txt").read_text() == "x"


@needs_bwrap
def test_no_network_connection_even_to_loopback(probe):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert run(probe, "connect", str(port)) == "NET-DENIED"
        assert run(probe, "connect", str(port), use_bwrap=False) == "NET-OK"  # the probe works


def test_without_bubblewrap_the_record_says_so(probe):
    res = run_untrusted(
        [str(probe / "probe"), "read", "/nonexistent"], probe, {}, 20, use_bwrap=False
    )
    assert res.sandbox["kind"] == "rlimits" and res.sandbox["reason"]
    assert res.sandbox["limits"]["memory_mb"] == Limits().memory_mb


@needs_bwrap
def test_read_only_library_dirs_under_tmp_stay_visible(probe, tmp_path):
    """A venv (hence MKL) under /tmp must survive the sandbox's private /tmp."""
    lib = tmp_path / "venv-lib"
    lib.mkdir()
    (lib / "libfake.so").write_text("x")
    res = run_untrusted(
        [str(probe / "probe"), "read", str(lib / "libfake.so")],
        probe,
        {"PATH": "/usr/bin"},
        20,
        ro_dirs=[lib],
    )
    assert res.output.strip() == "READ-OK"
    res = run_untrusted(
        [str(probe / "probe"), "write", str(lib / "new.so")],
        probe,
        {"PATH": "/usr/bin"},
        20,
        ro_dirs=[lib],
    )
    assert not (lib / "new.so").exists()


@needs_bwrap
def test_a_long_running_sandboxed_process_talks_over_pipes_and_sees_only_its_dirs(tmp_path):
    """The judge's runner: stdin/stdout pipes, its work dir and its arena dir writable."""
    from hpcagents.judge.sandbox import start_untrusted

    work, arena, other = tmp_path / "work", tmp_path / "arena", tmp_path / "other"
    for d in (work, arena, other):
        d.mkdir()
    script = (
        f"read line; echo ok > {arena}/a; echo no > {other}/b 2>/dev/null; "
        "cat /etc/passwd >/dev/null 2>&1 && echo passwd-visible; echo got-$line"
    )
    proc, info = start_untrusted(
        ["/bin/sh", "-c", script], work, {"PATH": "/usr/bin:/bin"}, Limits(), rw_dirs=[arena]
    )
    out, _ = proc.communicate(b"hello\n", timeout=30)
    assert info["kind"] == "bubblewrap"
    assert out.decode().strip() == "got-hello"
    assert (arena / "a").read_text() == "ok\n" and not (other / "b").exists()
