"""The compiler's own words on a candidate that compiles: which of its loops vectorised,
with which vector size, and why the others did not.

Why: a model that writes a loop nest gets no word back but a GFLOP/s figure; whether
GCC vectorised the inner loop (and why not: aliasing, control flow, a non-affine access)
is the first thing an HPC engineer looks at, and it costs one more compile.

How, and what it never touches:

* A **second compile** of the candidate, **in the sandbox** (the judge's one sandboxed
  compile, :func:`hpcagents.judge.build.compile_in_sandbox`: bubblewrap where it works),
  with the campaign's fixed flags plus GCC's
  ``-fopt-info-vec-optimized -fopt-info-vec-missed`` (clang: ``-Rpass*=loop-vectorize``),
  to assembly thrown away (``-S -o /dev/null``). The object that is linked and timed is
  the first compile's, with exactly the fixed flags: the report never changes it.
* Only diagnostics located in the candidate's own file are kept (a note from a system
  header's intrinsic is attached to the candidate's loop that contains it, its text cut
  before GIMPLE statement dumps), so no host file's text can reach a prompt.
* **Condensed** to one line per loop of the candidate's file: vectorised (vector bytes,
  epilogue sizes) or not (the distinct reasons), the loop's own source line beside it;
  outer loops that are not vectorised only because they contain a loop (normal) are
  summed up in one line; straight-line (SLP) vectorisation in one line per source line.
  Bounded in entries and characters, so it fits a repair prompt.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcagents.judge.build import PROTOTYPE_H, compile_in_sandbox
from hpcagents.judge.sandbox import bwrap_status

#: What GCC is asked for: the loops it vectorised and the ones it did not, with reasons.
GCC_FLAGS = ("-fopt-info-vec-optimized", "-fopt-info-vec-missed")
CLANG_FLAGS = (
    "-Rpass=loop-vectorize",
    "-Rpass-missed=loop-vectorize",
    "-Rpass-analysis=loop-vectorize",
)
#: The bounds of the condensed text (it goes into every repair / PG prompt).
MAX_ENTRIES = 16
MAX_CHARS = 2400
MAX_REASON_CHARS = 110
MAX_CODE_CHARS = 60
#: Reasons that only say "this loop holds another loop": expected for outer loops.
_NESTING = ("multiple nested loops", "two or more consecutive inner loops")

_GCC_LINE = re.compile(
    r"^(?P<file>[^:\s][^:]*):(?P<line>\d+):(?P<col>\d+): "
    r"(?P<kind>optimized|missed|note): (?P<msg>.*)$"
)
_CLANG_LINE = re.compile(
    r"^(?P<file>[^:\s][^:]*):(?P<line>\d+):(?P<col>\d+): remark: (?P<msg>.*?)(?: \[-R[^\]]*\])?$"
)


@dataclass
class LoopNote:
    """What the compiler said about one loop (or one straight-line block) of the file."""

    line: int
    vectorized: bool
    kind: str = "loop"  # loop | slp (straight-line code vectorised as a block)
    vector_bytes: list[int] = field(default_factory=list)  # GCC: e.g. [64, 32] (+epilogue)
    width: int | None = None  # clang: the vectorisation width in elements
    reasons: list[str] = field(default_factory=list)
    code: str = ""  # the loop's source line, cut
    count: int = 1  # how many times the compiler reported it (clones, versions, SLP parts)

    @property
    def nesting_only(self) -> bool:
        """Not vectorised only because it holds another loop (normal for outer loops)."""
        return (
            not self.vectorized
            and bool(self.reasons)
            and all(any(n in r for n in _NESTING) for r in self.reasons)
        )


def is_clang(cc: str) -> bool:
    """Whether ``cc`` is clang (it takes -Rpass, not -fopt-info)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "clang" in out.stdout.lower()


def clean_reason(text: str) -> str:
    """GCC's reason without its prefix and without GIMPLE statement dumps (SSA names
    mean nothing to a model, and a dump could quote a header's code)."""
    text = text.strip()
    for prefix in ("not vectorized: ", "failed: ", "loop not vectorized: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = re.split(r"\s*(?:stmt|statement)s?:\s", text, maxsplit=1)[0]
    text = text.split(": _", 1)[0].rstrip(" .:")
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "…"
    return text


def _code(lines: list[str], line: int) -> str:
    if not 1 <= line <= len(lines):
        return ""
    text = " ".join(lines[line - 1].split())
    return text if len(text) <= MAX_CODE_CHARS else text[: MAX_CODE_CHARS - 1] + "…"


def _called(msg: str) -> str:
    """The function a "statement clobbers memory" remark names ('' for OpenMP's runtime)."""
    m = re.search(r"(?:= )?([A-Za-z_]\w*) \(", msg.split("memory:", 1)[-1])
    if not m or m[1].startswith(("__builtin_GOMP", "GOMP_", "omp_")):
        return ""
    return m[1].removeprefix("__builtin_")


def parse_gcc(output: str, name: str, source: str) -> list[LoopNote]:
    """The loops of ``name`` in GCC's -fopt-info output, in source-line order.

    GCC prints "couldn't vectorize loop" at the loop, then the reason at the statement
    that stopped it (possibly in a header, for an intrinsic): a reason belongs to the
    loop most recently named. A loop reported by several copies (OpenMP outlining,
    versioning) is vectorised when any copy is.
    """
    lines = source.splitlines()
    loops: dict[int, LoopNote] = {}
    slp: dict[int, LoopNote] = {}
    current: LoopNote | None = None
    raws = output.splitlines()
    for i, raw in enumerate(raws):
        m = _GCC_LINE.match(raw)
        if not m:
            continue
        own = m["file"] in (name, f"./{name}")
        line, kind, msg = int(m["line"]), m["kind"], m["msg"]
        if kind == "note":
            continue
        if "statement clobbers memory" in msg:
            # right after "couldn't vectorize loop", a call is the reason; elsewhere it is
            # the basic-block vectoriser's remark on a call: noise
            call = _called(msg)
            if current is not None and not current.reasons and call:
                current.reasons.append(f"calls {call}() inside the loop")
            continue
        if "no vectype for" in msg and i + 1 < len(raws):
            typed = re.match(r"^\s+scalar_type: (.+)$", raws[i + 1])
            if typed:
                scalar = typed[1].strip()
                msg = (
                    f"its statements are already vector intrinsics ({scalar})"
                    if scalar.startswith("__m")
                    else f"no vector type for {scalar} values"
                )
        if kind == "optimized":
            sized = re.search(r"using (\d+) byte vectors", msg)
            if msg.startswith("basic block part vectorized") and own:
                note = slp.setdefault(
                    line, LoopNote(line, True, "slp", code=_code(lines, line), count=0)
                )
                note.count += 1
                if sized and int(sized[1]) not in note.vector_bytes:
                    note.vector_bytes.append(int(sized[1]))
            elif msg.startswith("loop vectorized") and own:
                note = loops.setdefault(
                    line, LoopNote(line, True, code=_code(lines, line), count=0)
                )
                if not note.vectorized:
                    note.vectorized, note.reasons = True, []
                note.count += 1
                if sized and int(sized[1]) not in note.vector_bytes:
                    note.vector_bytes.append(int(sized[1]))
            elif own and "versioned" in msg:
                note = loops.setdefault(
                    line, LoopNote(line, False, code=_code(lines, line), count=0)
                )
                reason = clean_reason(msg)
                if reason not in note.reasons:
                    note.reasons.append(reason)
            current = None
            continue
        # missed
        if msg.startswith("couldn't vectorize loop"):
            if own:
                current = loops.setdefault(
                    line, LoopNote(line, False, code=_code(lines, line), count=0)
                )
                current.count += 1
            else:
                current = None  # a loop inside a header's inline function: not the file's
            continue
        if current is not None and not current.vectorized:
            reason = clean_reason(msg)
            if reason and reason not in current.reasons:
                current.reasons.append(reason)
    return sorted([*loops.values(), *slp.values()], key=lambda n: (n.line, n.kind))


def parse_clang(output: str, name: str, source: str) -> list[LoopNote]:
    """The loops of ``name`` in clang's -Rpass / -Rpass-missed / -Rpass-analysis remarks."""
    lines = source.splitlines()
    loops: dict[int, LoopNote] = {}
    for raw in output.splitlines():
        m = _CLANG_LINE.match(raw)
        if not m or m["file"] not in (name, f"./{name}"):
            continue
        line, msg = int(m["line"]), m["msg"]
        note = loops.setdefault(line, LoopNote(line, False, code=_code(lines, line), count=0))
        if msg.startswith("vectorized loop"):
            width = re.search(r"vectorization width: (\d+)", msg)
            note.vectorized, note.reasons = True, []
            note.width = int(width[1]) if width else None
            note.count += 1
        elif not note.vectorized:
            reason = clean_reason(msg)
            if reason and reason != "loop not vectorized" and reason not in note.reasons:
                note.reasons.append(reason)
    return sorted(loops.values(), key=lambda n: n.line)


def _describe(note: LoopNote) -> str:
    if note.kind == "slp":
        size = "/".join(str(b) for b in note.vector_bytes)
        return f"straight-line code vectorised as a block (SLP, {size}-byte vectors)"
    if note.vectorized:
        if note.width:
            return f"vectorised, width {note.width} elements"
        sizes = note.vector_bytes
        if not sizes:
            return "vectorised"
        text = f"vectorised, {sizes[0]}-byte vectors"
        if len(sizes) > 1:
            text += " (epilogue " + ", ".join(f"{b}-byte" for b in sizes[1:]) + ")"
        return text
    why = "; ".join(note.reasons) or "no reason given"
    return f"NOT vectorised: {why}"


def condense(
    notes: list[LoopNote], max_entries: int = MAX_ENTRIES, max_chars: int = MAX_CHARS
) -> tuple[str, bool]:
    """One line per loop that matters, in source order; returns (text, truncated).

    Kept first: loops not vectorised for a reason other than nesting (what to fix),
    then vectorised loops, then SLP blocks; outer loops that only hold other loops are
    summed up in one closing line.
    """
    nesting = [n for n in notes if n.nesting_only]
    rest = [n for n in notes if not n.nesting_only]

    def rank(n: LoopNote) -> int:
        return 0 if not n.vectorized else 1 if n.kind == "loop" else 2

    chosen = sorted(rest, key=rank)[:max_entries]
    truncated = len(chosen) < len(rest)
    out = []
    for n in sorted(chosen, key=lambda n: n.line):
        where = "loop at line" if n.kind == "loop" else "line"
        entry = f"{where} {n.line}: {_describe(n)}"
        if n.code:
            entry += f"  | {n.code}"
        out.append(entry)
    if nesting:
        out.append(
            "outer loops not vectorised because they hold other loops (normal): line(s) "
            + ", ".join(str(n.line) for n in nesting)
        )
    if not out:
        out.append("the compiler reported no loop of this file (no loop, or all unrolled away)")
    text = ""
    for i, entry in enumerate(out):
        if len(text) + len(entry) + 1 > max_chars:
            text += f"[... {len(out) - i} more line(s) cut]\n"
            truncated = True
            break
        text += entry + "\n"
    if truncated and not text.rstrip().endswith("cut]"):
        text += f"[... {len(rest) - len(chosen)} more loop(s) not shown]\n"
    return text.rstrip("\n"), truncated


def optimisation_report(
    source_name: str,
    code: str,
    signature: str,
    workdir: Path,
    cc: str,
    cflags: tuple[str, ...],
    use_bwrap: bool = True,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Compile ``code`` a second time, in the sandbox, for the compiler's vectorisation
    report; returns the ``optreport`` record of evaluation.json (errors as values).

    The caller has already compiled (and screened) the same code with the fixed flags;
    this compile writes no object (``-S -o /dev/null``) and nothing of it is linked.
    """
    workdir = Path(workdir)
    clang = is_clang(cc)
    extra = CLANG_FLAGS if clang else GCC_FLAGS
    cmd = [cc, *cflags, *extra, "-S", "-include", PROTOTYPE_H, source_name, "-o", "/dev/null"]
    run = compile_in_sandbox(
        source_name,
        signature,
        code,
        workdir,
        cmd,
        use_bwrap=use_bwrap,
        timeout_s=timeout_s,
        file_mb=64,
    )
    output = run.output()
    record: dict[str, Any] = {
        "status": "ok",
        "reason": "",
        "compiler": "clang" if clang else "gcc",
        "command": cmd,
        "seconds": run.seconds,
        "sandbox": "bubblewrap" if use_bwrap and bwrap_status()[0] else "rlimits",
        "messages": 0,
        "loops": [],
        "text": "",
        "truncated": False,
    }
    if run.returncode is None:
        record.update(
            status="failed", reason=f"the report's compile timed out after {timeout_s:g} s"
        )
        return record
    if run.rc() != "0":
        first = next((ln for ln in output.splitlines() if "error" in ln), "")
        record.update(
            status="failed",
            reason=f"the report's compile failed (exit {run.rc() or run.returncode}): "
            + (first[:200] if first.startswith(source_name) else "see the compiler's flags")
            + f"; command: {shlex.join(cmd)}",
        )
        return record
    parse = parse_clang if clang else parse_gcc
    notes = parse(output, source_name, code)
    record["messages"] = sum(1 for ln in output.splitlines() if ln.startswith(source_name + ":"))
    record["loops"] = [asdict(n) for n in notes]
    record["text"], record["truncated"] = condense(notes)
    return record


def report_text(record: dict[str, Any] | None) -> str:
    """The condensed report as a prompt shows it (a plain sentence when there is none)."""
    if not record:
        return "(no compiler report for this version)"
    if record.get("status") != "ok":
        return f"(no compiler report: {record.get('reason') or record.get('status')})"
    return record.get("text") or "(the compiler reported nothing on this file)"
