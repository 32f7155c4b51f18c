"""Race check and validation at several thread counts (issue 25).

An OpenMP kernel with a data race is undefined behaviour: right on 2 cores every time and
wrong on a 40-core node once a day. Two checks run after the usual validation:

* **thread counts**: the gcc-built candidate (the object that is timed) is validated again
  in fresh processes at 1 thread, an odd count and all cores, because OpenMP code is often
  right only for the thread count it was tried with (row blocks of m / nthreads, ...).
* **race check**: a second build of the same file with clang + ``-fsanitize=thread``, linked
  with the trusted runner (compiled with ``-DHPCA_RACECHECK``) and the generated call stub,
  run in the sandbox on a few small validation cases at several thread counts (2, 3, 4 by
  default) with LLVM's OpenMP race tool Archer (``OMP_TOOL_LIBRARIES=libarcher.so``), so
  ThreadSanitizer understands OpenMP's barriers, reductions and tasks. Its object is never
  timed. A race whose accesses touch the candidate's own lines fails the attempt with status
  ``data_race`` and a reason naming both accesses (file:line, read/write, thread).

Races inside the OpenMP runtime are suppressed (TSan ``race_top``/``called_from_lib``
suppressions on the runtime's modules), and a report whose two accesses have no frame in the
candidate's file (the runtime, the trusted runner or stub) is never the candidate's: it is
counted in the record, not held against it. The reference never runs in this process.

Honest where it cannot check: clang or Archer missing, a file clang cannot build (GNU
extensions), a file clang preprocesses differently from gcc (``#ifdef __clang__``: the race
check would not test the code that is timed), a run that exceeds its bounds: the record says
"race check skipped: <why>", never a silent pass and never a rejection.

The TSan process symbolises nothing itself (``symbolize=0``: no helper process is spawned
from the candidate's process); the trusted side symbolises the addresses afterwards with
llvm-symbolizer, in the sandbox.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcagents.judge.arena import Frame, fill_candidate, frame, generate_inputs, plan
from hpcagents.judge.blas import BlasInfo
from hpcagents.judge.build import (
    PROTOTYPE_H,
    compile_in_sandbox,
    first_error,
    own_diagnostics,
    runner_objects,
    system_include_dirs,
    truncate,
)
from hpcagents.judge.checks import check_call, check_reason
from hpcagents.judge.errors import JudgeError, RunnerFault
from hpcagents.judge.process import Reference, Runner, candidate_call, process_tree, runner_env
from hpcagents.judge.sandbox import Limits, run_untrusted
from hpcagents.spec.kernelspec import Case, KernelSpec

#: Thread counts of the race check: more than the cores is fine (TSan sees the accesses,
#: not the timing), and an odd count catches blocks computed as m / nthreads.
RACE_THREADS = (2, 3, 4)
#: Flops bound of a race-check case (ThreadSanitizer slows code 5-15x).
RACE_MAX_FLOPS = 4e6
RACE_MAX_CASES = 3
RACE_TIMEOUT_S = 30.0
#: The trusted runner is compiled with this define for the race binary: the runner's
#: seccomp filter (if any) must let ThreadSanitizer's runtime work (see README).
RACECHECK_DEFINE = "-DHPCA_RACECHECK"
#: System calls the race runner makes AFTER its first command (where a seccomp filter in
#: runner.c would be installed) that the gcc/libgomp runner does not: measured with
#: ``strace -f`` on an honest and a racy dgemm at 3 threads (clang 14, libomp 14, Archer).
#: libomp initialises at the first parallel region (the kernel's first call): it loads
#: Archer (openat/mmap of libarcher.so, readlink, newfstatat), registers itself in
#: /dev/shm (openat, ftruncate, unlink), reads the CPU set (sched_getaffinity, sysinfo,
#: open of /proc and /sys files); TSan's runtime adds its background thread (nanosleep,
#: clock_gettime, gettimeofday), shadow management (madvise, prlimit64), and writes a
#: report to its log file (open, write, getpid, getuid, gettid, ioctl) before exit_group.
TSAN_EXTRA_SYSCALLS = (
    "clock_gettime",
    "close",
    "exit",
    "ftruncate",
    "getpid",
    "gettid",
    "gettimeofday",
    "getuid",
    "ioctl",
    "madvise",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "prlimit64",
    "readlink",
    "sched_getaffinity",
    "sched_yield",
    "sysinfo",
    "unlink",
)
RACE_CFLAGS = ("-O1", "-g", "-fno-omit-frame-pointer", "-fopenmp", "-fsanitize=thread")
#: What of the campaign's flags the race build keeps: the target (so intrinsics and target
#: attributes compile the same way), macros and the language standard.
_KEEP_FLAG = re.compile(r"^(-m\S+|-D\S+|-U\S+|-std=\S+)$")
#: TSan suppressions: races whose TOP frame is in the OpenMP runtime or Archer, and the
#: interceptors (mutexes, malloc) the runtime calls. ``race:`` (any frame) would be wrong:
#: every outlined OpenMP region of the candidate is called from libomp.
SUPPRESSIONS = (
    "race_top:libomp.so",
    "race_top:libarcher.so",
    "called_from_lib:libomp.so",
    "called_from_lib:libarcher.so",
)


@dataclass(frozen=True)
class RaceConfig:
    """How the race check and the thread-count validation run (evaluation config)."""

    enabled: bool = True
    threads: tuple[int, ...] = RACE_THREADS
    max_cases: int = RACE_MAX_CASES
    max_flops: float = RACE_MAX_FLOPS
    timeout_s: float = RACE_TIMEOUT_S
    rss_mb: int = 6144
    cc: str = "clang"
    thread_counts: bool = True  # validation at 1, an odd count and all cores


@dataclass(frozen=True)
class Tools:
    clang: str
    archer: str
    symbolizer: str
    version: str


def find_tools(cc: str = "clang") -> tuple[Tools | None, str]:
    """clang, Archer (libarcher.so from libomp-dev) and llvm-symbolizer, or why not.

    Archer is looked for beside the clang that builds (its llvm lib directory, found from
    the real path of ``clang``), then where clang's driver finds libraries: no version is
    hard-coded."""
    exe = shutil.which(cc)
    if not exe:
        return None, f"{cc} is not installed (Debian: apt-get install clang libomp-dev)"
    real = Path(os.path.realpath(exe))
    candidates = [real.parent.parent / "lib" / "libarcher.so"]
    try:
        out = subprocess.run(
            [exe, "-print-file-name=libarcher.so"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        if out and os.path.isabs(out):
            candidates.append(Path(out))
        version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None, f"{cc} does not run"
    archer = next((p for p in candidates if p.is_file()), None)
    if archer is None:
        return None, (
            "LLVM's OpenMP race tool libarcher.so was not found beside "
            f"{real} (Debian: apt-get install libomp-dev)"
        )
    sym = real.parent / "llvm-symbolizer"
    symbolizer = str(sym) if sym.is_file() else shutil.which("llvm-symbolizer")
    if not symbolizer:
        return None, "llvm-symbolizer was not found (Debian: apt-get install llvm)"
    return Tools(exe, str(archer), symbolizer, version), ""


# --- thread counts ---------------------------------------------------------------------


def validation_thread_counts(cores: int, done: int) -> list[int]:
    """1, an odd count and all cores, without ``done`` (already validated).

    The odd count is the largest odd number <= cores above 1, else 3 (over-subscribed:
    still a thread count a node may give)."""
    odd = cores if cores % 2 else cores - 1
    if odd < 3:
        odd = 3
    return [t for t in dict.fromkeys([1, odd, cores]) if t != done]


@dataclass
class Context:
    """What the two checks need of the evaluation (its build, limits and sandbox)."""

    threads: int  # the thread count the main validation ran at
    cores: int
    blas: BlasInfo | None
    limits: Limits
    use_bwrap: bool
    cflags: tuple[str, ...]
    deadline: float  # of the thread-count validation; the race check has its own bound


@dataclass
class Outcome:
    """The checks' verdict: ``failure`` is (status, reason) or None."""

    failure: tuple[str, str] | None = None
    thread_counts: list[dict[str, Any]] = field(default_factory=list)
    race: dict[str, Any] | None = None


def validate_at_thread_counts(
    kernel: KernelSpec,
    exe: Path,
    workdir: Path,
    reference: Reference,
    rng: np.random.Generator,
    ctx: Context,
    counts: list[int],
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """Every validation case again, in a fresh candidate process per thread count, on
    fresh inputs. Returns the per-count records and the first failure (status, reason).
    ``workdir`` holds ``exe`` (the only directory the sandboxed runner sees)."""
    fr = reference.runner.frame  # the evaluation's frame: the reference's arena too
    records: list[dict[str, Any]] = []
    for t in counts:
        env = runner_env(t, ctx.blas, workdir)
        runner = None
        rec: dict[str, Any] = {"threads": t, "passed": True, "cases": 0, "seconds": 0.0}
        records.append(rec)
        t0 = time.monotonic()
        try:
            runner = Runner(exe, workdir, fr, env, ctx.limits, [], ctx.use_bwrap, f"candidate-t{t}")
            for case in kernel.cases:
                lay = plan(kernel, case, fr)
                data = generate_inputs(kernel, lay, rng)
                _, want, mag = reference.run(lay, data, ctx.deadline)
                _, image, after, got = candidate_call(kernel, runner, lay, data, ctx.deadline)
                c = check_call(kernel, lay, image, after, got, want, mag)
                rec["cases"] += 1
                if not c.ok:
                    reason = check_reason(kernel, lay, c, f"{case.label()} at {t} threads")
                    rec.update(passed=False, reason=reason)
                    return records, ("wrong_answer", _thread_hint(reason, t))
        except RunnerFault as exc:
            if exc.status == "timeout":
                why = f"the run did not finish in time at {t} threads (OMP_NUM_THREADS={t})"
            else:
                why = f"{exc.reason} at {t} threads (OMP_NUM_THREADS={t})"
            rec.update(passed=False, reason=why)
            return records, (exc.status, _thread_hint(why, t))
        finally:
            rec["seconds"] = round(time.monotonic() - t0, 3)
            if runner is not None:
                runner.close()
    return records, None


def _thread_hint(reason: str, t: int) -> str:
    return (
        f"{reason} (the kernel was right at the campaign's thread count but not at {t}: a "
        "kernel must be right for any thread count, e.g. blocks that do not divide evenly)"
    )


# --- the race build --------------------------------------------------------------------


@dataclass
class RaceBuild:
    ok: bool
    reason: str  # why skipped, when not ok
    exe: Path | None
    command: list[str]
    output: str
    seconds: float


def race_flags(cflags: tuple[str, ...]) -> list[str]:
    return [*RACE_CFLAGS, *(f for f in cflags if _KEEP_FLAG.match(f))]


def _own_lines(preprocessed: str, name: str) -> set[int]:
    """Lines of ``name`` that produce tokens after preprocessing (line markers followed)."""
    lines: set[int] = set()
    current, line = "", 0
    marker = re.compile(r'^#\s*(?:line\s+)?(\d+)\s+"([^"]*)"')
    for text in preprocessed.splitlines():
        m = marker.match(text)
        if m:
            line, current = int(m.group(1)), m.group(2)
            continue
        if os.path.basename(current) == name and text.strip():
            lines.add(line)
        line += 1
    return lines


def build_race_runner(
    kernel: KernelSpec,
    source: Path,
    workdir: Path,
    cc: str,
    cflags: tuple[str, ...],
    tools: Tools,
    use_bwrap: bool,
    timeout_s: float = 120.0,
) -> RaceBuild:
    """Compile the candidate with clang + TSan IN THE SANDBOX and link the race runner,
    through the judge's one sandboxed compile (:func:`compile_in_sandbox`) with the race
    build's own compiler, flags and trusted objects (the runner with ``-DHPCA_RACECHECK``).

    The same sandboxed script preprocesses the file with the campaign's compiler and with
    clang: when the candidate's own lines that survive preprocessing differ (code under
    ``#ifdef __clang__`` or ``__SANITIZE_THREAD__``), the race build would not be the code
    that is timed, and the check is skipped, said aloud."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = kernel.source
    flags = race_flags(cflags)
    try:
        trusted = runner_objects(
            kernel,
            tools.clang,
            tuple(flags),
            defines=(RACECHECK_DEFINE,),
            tag="race-runner",
            key=(tools.version,),
        )
    except JudgeError as exc:
        return RaceBuild(False, str(exc), None, [], "", 0.0)
    wd = str(workdir.resolve())
    inc = ["-include", PROTOTYPE_H]
    gcc_e = [cc, *cflags, *inc, "-E", name, "-o", "gcc.i"]
    clang_e = [tools.clang, *flags, *inc, "-E", name, "-o", "clang.i"]
    compile_cmd = [tools.clang, *flags, f"-fdebug-prefix-map={wd}=.", *inc, "-c", name]
    compile_cmd += ["-o", "candidate-tsan.o"]
    link = [tools.clang, "-fopenmp", "-fsanitize=thread", "-pie"]
    link += [*(o.name for o in trusted), "candidate-tsan.o", "-lm", "-o", "race-runner"]
    run = compile_in_sandbox(
        name,
        kernel.signature,
        source.read_text(errors="replace"),
        workdir,
        compile_cmd,
        link,
        trusted,
        before=(gcc_e, clang_e),
        prefix="race-",
        use_bwrap=use_bwrap,
        timeout_s=timeout_s,
    )
    seconds = run.seconds
    system_dirs = system_include_dirs(tools.clang)
    out = own_diagnostics(run.output(), name, system_dirs)
    if run.returncode is None:
        why = "clang timed out building the file"
        return RaceBuild(False, why, None, compile_cmd, out, seconds)
    if run.rc() != "0":
        return RaceBuild(
            False,
            f"clang cannot build this file (gcc can): {first_error(out)}",
            None,
            compile_cmd,
            truncate(out, 2000),
            seconds,
        )
    if run.rc("link") != "0":
        lout = run.output("link")
        return RaceBuild(
            False,
            f"the race runner does not link: {first_error(lout)}",
            None,
            compile_cmd,
            truncate(out + lout, 2000),
            seconds,
        )
    g, c = _own_lines(run.read("gcc.i"), name), _own_lines(run.read("clang.i"), name)
    if g != c or not g:
        diff = sorted(g ^ c)
        where = ", ".join(str(x) for x in diff[:6]) + (" ..." if len(diff) > 6 else "")
        return RaceBuild(
            False,
            f"clang and {cc} preprocess {name} differently (lines {where or '?'}: compiler-"
            "specific #if/#ifdef); the race build would not be the code that is timed",
            None,
            compile_cmd,
            out,
            seconds,
        )
    run.tidy("gcc.i", "clang.i")
    return RaceBuild(True, "", workdir / "race-runner", compile_cmd, out, seconds)


# --- the race run ----------------------------------------------------------------------


def race_cases(kernel: KernelSpec, max_cases: int, max_flops: float) -> list[Case]:
    """The largest validation cases with work under ``max_flops`` (races need enough work
    to split over the threads; TSan is 5-15x slower): at most ``max_cases``."""
    scored = []
    for case in kernel.cases:
        try:
            f = float(kernel.flops(case))
        except Exception:  # noqa: BLE001 - a kernel without a flops figure for a case
            f = 0.0
        if 0 < f <= max_flops:
            scored.append((f, case))
    scored.sort(key=lambda fc: -fc[0])
    return [c for _, c in scored[:max_cases]]


@dataclass
class StackFrame:
    module: str
    offset: int
    function: str = ""
    file: str = ""
    line: int = 0


@dataclass
class Access:
    kind: str  # "read" | "write" (with "atomic " when atomic)
    size: int
    address: int
    thread: str
    previous: bool
    frames: list[StackFrame] = field(default_factory=list)


@dataclass
class Report:
    title: str
    accesses: list[Access]
    location: str
    arena_offset: int | None
    case: str = ""
    threads: int = 0


_ACCESS = re.compile(
    r"^\s*(Previous )?(Atomic )?(read|write) of size (\d+) at (0x[0-9a-f]+) by "
    r"(main thread|thread T\d+)",
    re.IGNORECASE,
)
_FRAME = re.compile(r"^\s*#\d+ .*\((\S+?)\+(0x[0-9a-f]+)\)")
_ARENA = re.compile(r"\(arena\+(0x[0-9a-f]+)\)")


def parse_reports(text: str) -> list[Report]:
    """ThreadSanitizer's warnings (symbolize=0: frames are module+offset) as reports."""
    reports: list[Report] = []
    for block in re.split(r"^={10,}\s*$", text, flags=re.MULTILINE):
        m = re.search(r"WARNING: ThreadSanitizer: (.+?) \(pid=\d+\)", block)
        if not m:
            continue
        accesses: list[Access] = []
        location, arena = "", None
        current: Access | None = None
        for line in block.splitlines():
            a = _ACCESS.match(line)
            if a:
                kind = ("atomic " if a.group(2) else "") + a.group(3).lower()
                current = Access(
                    kind, int(a.group(4)), int(a.group(5), 16), a.group(6), bool(a.group(1))
                )
                accesses.append(current)
                continue
            if line.strip().startswith("Location is"):
                location = line.strip()
                z = _ARENA.search(line)
                arena = int(z.group(1), 16) if z else None
                current = None
                continue
            if not line.strip() or not line.startswith(" "):
                current = None
                continue
            f = _FRAME.match(line)
            if f and current is not None:
                current.frames.append(StackFrame(os.path.basename(f.group(1)), int(f.group(2), 16)))
        reports.append(Report(m.group(1).strip(), accesses, location, arena))
    return reports


def symbolize(reports: list[Report], exe: Path, tools: Tools, use_bwrap: bool) -> None:
    """Fill file:line of every frame in the race runner, with llvm-symbolizer run by the
    trusted side in the sandbox (innermost inlined location first)."""
    frames = [
        fr for r in reports for a in r.accesses for fr in a.frames[:12] if fr.module == exe.name
    ]
    offsets = sorted({fr.offset for fr in frames})
    if not offsets:
        return
    res = run_untrusted(
        [tools.symbolizer, f"--obj={exe.name}", "--inlining", "--functions=short"],
        exe.parent,
        {"PATH": "/usr/bin:/bin", "LANG": "C", "HOME": str(exe.parent)},
        60,
        Limits(cpu_s=60, memory_mb=4096),
        stdin_text="".join(f"{hex(o)}\n" for o in offsets),
        use_bwrap=use_bwrap,
    )
    blocks = [b for b in res.output.strip().split("\n\n")]
    where: dict[int, list[tuple[str, str, int]]] = {}
    for off, block in zip(offsets, blocks, strict=False):
        lines = block.strip().splitlines()
        chain = []
        for fn, loc in zip(lines[0::2], lines[1::2], strict=False):
            parts = loc.rsplit(":", 2)
            file = parts[0] if len(parts) == 3 else loc
            try:
                ln = int(parts[1]) if len(parts) == 3 else 0
            except ValueError:
                ln = 0
            chain.append((fn, os.path.basename(file), ln))
        where[off] = chain
    for r in reports:
        for a in r.accesses:
            expanded: list[StackFrame] = []
            for fr in a.frames:
                chain = where.get(fr.offset) if fr.module == exe.name else None
                if not chain:
                    expanded.append(fr)
                    continue
                for fn, file, ln in chain:
                    expanded.append(StackFrame(fr.module, fr.offset, fn, file, ln))
            a.frames = expanded


def own_frame(access: Access, name: str) -> StackFrame | None:
    """The first frame of ``access`` in the candidate's file (None: not its code)."""
    return next((f for f in access.frames if f.file == name and f.line > 0), None)


def is_candidates(report: Report, name: str) -> bool:
    return report.title.startswith("data race") and any(
        own_frame(a, name) is not None for a in report.accesses
    )


def _arena_element(
    kernel: KernelSpec, case: Case | None, offset: int | None, fr: Frame | None
) -> str:
    """Which array element an arena offset is, for the case that raced."""
    if case is None or offset is None:
        return ""
    lay = plan(kernel, case, fr)
    for name, a in lay.arrays.items():
        if a.offset <= offset < a.offset + a.nbytes:
            flat = (offset - a.offset) // a.dtype.itemsize
            idx = np.unravel_index(flat, a.alloc) if a.alloc else ()
            return f"{name}" + "".join(f"[{int(i)}]" for i in idx)
    return ""


def _describe(access: Access, name: str, lines: list[str]) -> str:
    f = own_frame(access, name)
    who = access.thread
    if f is None:
        top = next((fr for fr in access.frames if fr.function or fr.module), None)
        place = (
            f"in {top.function or '?'} ({top.file or top.module})" if top else "outside the kernel"
        )
        return f"{access.kind} of {access.size} bytes {place} by {who}"
    text = lines[f.line - 1].strip() if 0 < f.line <= len(lines) else ""
    quote = f" `{text[:120]}`" if text else ""
    return f"{access.kind} of {access.size} bytes at {name}:{f.line}{quote} by {who}"


def race_reason(
    kernel: KernelSpec, reports: list[Report], source_text: str, fr: Frame | None = None
) -> str:
    """The repair-ready verdict: both accesses of the first race, then the other sites."""
    lines = source_text.splitlines()
    name = kernel.source
    first = reports[0]
    by_case = {c.label(): c for c in kernel.cases}
    cur = next((a for a in first.accesses if not a.previous), first.accesses[0])
    prev = next((a for a in first.accesses if a.previous), None)
    elem = _arena_element(kernel, by_case.get(first.case), first.arena_offset, fr)
    on = f" on {elem}" if elem else ""
    text = (
        f"data race at {first.threads} threads in case {first.case}{on}: "
        f"{_describe(cur, name, lines)}, and previously "
        f"{_describe(prev, name, lines) if prev else '(the other access was not recorded)'}"
    )
    sites = []
    for r in reports[1:]:
        pair = " vs ".join(
            f"{a.kind} {name}:{own_frame(a, name).line}" if own_frame(a, name) else a.kind
            for a in r.accesses[:2]
        )
        if pair not in sites:
            sites.append(pair)
    if sites:
        text += f" (+{len(reports) - 1} more race report(s): {'; '.join(sites[:4])})"
    return text + (
        ". Two threads accessed the same memory without synchronisation, at least one "
        "writing (ThreadSanitizer with LLVM's OpenMP race tool): give each thread its own "
        "output elements or synchronise (reduction, atomic, barrier)"
    )


class _RssWatch:
    """Kills a process group whose resident memory exceeds a bound (the TSan run has no
    address-space limit: ThreadSanitizer reserves terabytes of shadow address space)."""

    def __init__(self, pid: int, limit_mb: int) -> None:
        self.pid, self.limit_mb, self.exceeded = pid, limit_mb, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss_mb(self) -> float:
        total = 0
        for p in process_tree(self.pid):
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                pass
        return total / 1024

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            if self._rss_mb() > self.limit_mb:
                self.exceeded = True
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def _race_env(
    threads: int, workdir: Path, tools: Tools, log: Path, raw: bool = False
) -> dict[str, str]:
    """The race runner's environment. ``raw``: without the runtime's suppressions
    (``ignore_noninstrumented_modules`` and the suppressions file), for the test that pins
    that they are needed and work."""
    env = runner_env(threads, None, workdir)
    env.pop("OMP_PLACES", None)
    env.pop("OMP_PROC_BIND", None)
    env["OMP_TOOL_LIBRARIES"] = tools.archer
    env["TSAN_OPTIONS"] = " ".join(
        [
            f"ignore_noninstrumented_modules={0 if raw else 1}",
            # the first report ends the run: the verdict is known, and a racy kernel can
            # otherwise spend minutes in TSan's de-duplication of thousands of races
            "halt_on_error=1",
            "symbolize=0",
            "history_size=2",
            "report_signal_unsafe=0",
            "detect_deadlocks=0",
            "exitcode=66",
            f"suppressions={workdir / 'tsan.supp'}",
            f"log_path={log}",
        ]
    )
    return env


def _read_logs(workdir: Path, prefix: str) -> str:
    return "".join(
        p.read_text(errors="replace") for p in sorted(workdir.glob(f"{prefix}.*")) if p.is_file()
    )


def run_race_check(
    kernel: KernelSpec,
    source: Path,
    workdir: Path,
    ctx: Context,
    rng: np.random.Generator,
    cfg: RaceConfig,
    cc: str = "gcc",
    raw: bool = False,
) -> dict[str, Any]:
    """Build and run the race runner; the ``race_check`` record (status clean, data_race
    or skipped, with the reason). ``raw``: no suppressions (for the test that pins them)."""
    t0 = time.monotonic()
    rec: dict[str, Any] = {
        "status": "skipped",
        "reason": "",
        "threads": list(cfg.threads),
        "cases": [],
        "races": [],
        "not_candidates": 0,
        "seconds": 0.0,
    }

    def done(status: str, reason: str, **more: Any) -> dict[str, Any]:
        rec.update(status=status, reason=reason, seconds=round(time.monotonic() - t0, 3), **more)
        return rec

    tools, why = find_tools(cfg.cc)
    if tools is None:
        return done("skipped", why)
    rec["tools"] = {"clang": tools.version, "archer": tools.archer}
    cases = race_cases(kernel, cfg.max_cases, cfg.max_flops)
    if not cases:
        return done("skipped", f"no validation case with work under {cfg.max_flops:g} flops")
    rec["cases"] = [c.label() for c in cases]
    workdir.mkdir(parents=True, exist_ok=True)
    built = build_race_runner(kernel, source, workdir, cc, ctx.cflags, tools, ctx.use_bwrap)
    rec["command"] = built.command
    rec["build_seconds"] = built.seconds
    if not built.ok or built.exe is None:
        return done("skipped", built.reason, output=built.output)
    (workdir / "tsan.supp").write_text("" if raw else "\n".join(SUPPRESSIONS) + "\n")
    fr = frame(kernel, cases)
    deadline = min(ctx.deadline, time.monotonic() + cfg.timeout_s)
    limits = Limits(cpu_s=int(cfg.timeout_s * 4) + 10, memory_mb=0, nproc=ctx.limits.nproc)
    reports: list[Report] = []
    problem = ""
    for t in cfg.threads:
        prefix = f"tsan-t{t}"
        env = _race_env(t, workdir, tools, workdir / prefix, raw)
        runner = watch = None
        try:
            runner = Runner(built.exe, workdir, fr, env, limits, [], ctx.use_bwrap, f"race-t{t}")
            watch = _RssWatch(runner.proc.pid, cfg.rss_mb)
            for case in cases:
                lay = plan(kernel, case, fr)
                data = generate_inputs(kernel, lay, rng)
                fill_candidate(runner.arena, kernel, lay, data)
                try:
                    runner.call(deadline)
                finally:
                    new = parse_reports(_read_logs(workdir, prefix))
                    for r in new:
                        r.case, r.threads = case.label(), t
                    reports.extend(new)
                if reports:
                    break
        except RunnerFault as exc:
            if reports:
                pass  # TSan ended the run at its first report (halt_on_error)
            elif watch is not None and watch.exceeded:
                problem = f"the sanitised run exceeded {cfg.rss_mb} MB of memory at {t} threads"
            elif exc.status == "timeout":
                problem = (
                    f"the sanitised run did not finish within {cfg.timeout_s:g} s (at {t} threads)"
                )
            else:
                problem = f"under ThreadSanitizer {exc.reason} at {t} threads"
        except JudgeError as exc:
            problem = f"the race runner failed: {exc}"
        finally:
            if watch is not None:
                watch.stop()
            if runner is not None:
                runner.close()
        if problem or reports:
            break
    symbolize(reports, built.exe, tools, ctx.use_bwrap)
    mine = [r for r in reports if is_candidates(r, kernel.source)]
    rec["not_candidates"] = len(reports) - len(mine)
    rec["races"] = [_race_record(r, kernel.source) for r in mine[:20]]
    if mine:
        text = source.read_text(errors="replace")
        return done("data_race", race_reason(kernel, mine, text, fr))
    if reports and not problem:
        first = reports[0]
        frames = [f for a in first.accesses for f in a.frames]
        named = [f for f in frames if f.function not in ("", "??")]
        other = [f.module for f in frames if f.module != built.exe.name]
        where = (
            f"{named[0].function} in {named[0].file or named[0].module}"
            if named
            else (other[0] if other else "the sanitiser's runtime")
        )
        problem = (
            f"the sanitised run stopped at a ThreadSanitizer report ({first.title}) outside "
            f"the candidate's code ({where}), at {first.threads} threads in case {first.case}"
        )
    if problem:
        return done("skipped", problem)
    return done(
        "clean",
        f"no data race in {len(cases)} case(s) at {', '.join(map(str, cfg.threads))} threads "
        "(clang ThreadSanitizer + Archer)",
    )


def _race_record(r: Report, name: str) -> dict[str, Any]:
    def acc(a: Access) -> dict[str, Any]:
        f = own_frame(a, name)
        return {
            "kind": a.kind,
            "size": a.size,
            "thread": a.thread,
            "previous": a.previous,
            "where": f"{name}:{f.line}" if f else "",
        }

    return {"case": r.case, "threads": r.threads, "accesses": [acc(a) for a in r.accesses[:2]]}


# --- the hook ---------------------------------------------------------------------------


def after_validation(
    kernel: KernelSpec,
    source: Path,
    exe: Path,
    workdir: Path,
    reference: Reference,
    rng: np.random.Generator,
    ctx: Context,
    validation_failure: str,
    cfg: RaceConfig | None = None,
    cc: str = "gcc",
) -> Outcome:
    """Both checks, called by evaluate between validation and timing (``workdir``: the
    evaluation's; the race build goes to ``workdir/race``).

    ``validation_failure``: the main validation's first failure ("" when it passed). The
    thread-count validation runs only when the main validation passed; the race check
    runs for every candidate that compiled (a race often is the cause of a wrong answer,
    and the repair prompt then names it). A race found wins over a wrong answer."""
    cfg = cfg or RaceConfig()
    out = Outcome()
    if cfg.thread_counts and not validation_failure:
        counts = validation_thread_counts(ctx.cores, ctx.threads)
        out.thread_counts, out.failure = validate_at_thread_counts(
            kernel, exe, exe.parent, reference, rng, ctx, counts
        )
    if not cfg.enabled:
        out.race = {
            "status": "skipped",
            "reason": "disabled by the configuration",
            "threads": [],
            "cases": [],
            "races": [],
            "not_candidates": 0,
            "seconds": 0.0,
        }
        return out
    out.race = run_race_check(kernel, source, workdir / "race", ctx, rng, cfg, cc)
    if out.race["status"] == "data_race":
        reason = out.race["reason"]
        also = validation_failure or (out.failure[1] if out.failure else "")
        if also:
            reason += f"; the validation failed too: {also}"
        out.failure = ("data_race", reason)
    return out


def race_note(race: dict[str, Any] | None) -> str:
    """What an ok verdict says about the race check ("race check skipped: why" aloud)."""
    if not race:
        return ""
    if race["status"] == "skipped":
        return f"; race check skipped: {race['reason']}"
    if race["status"] == "clean":
        return f"; race check: {race['reason']}"
    return ""
