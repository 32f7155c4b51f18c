"""Static screening of untrusted candidate code: on what the compiler actually sees and makes.

Each gate names what it rejected so the PG can repair it, and each closes a class of
attack by looking at the compiler's own view rather than at spellings:

* the **include gate** reads the preprocessor's list of the files it opened (``-H``, run in
  the sandbox): only the compiler's own system headers may be included, and not those for
  processes, files, sockets, threads, signals, dynamic loading or BLAS. ``%:include``,
  ``#include MACRO``, ``#import`` and backslash-continued directives all end in that list.
* the **preprocessed-text screen** looks at the candidate's own lines after
  preprocessing (macros expanded, ``_Pragma`` turned into ``#pragma``): flag-changing
  pragmas and attributes (``optimize`` in any spelling), code that runs outside the call
  (constructors, destructors, ifunc resolvers, named sections), inline assembly.
* the **object screen** reads the compiled object: it may define ONE global symbol, the
  kernel's function (helpers and data must be static), no constructor/destructor section
  (.init_array, .fini_array, .ctors, .dtors, .preinit_array), and call only memory
  functions, libm, the OpenMP runtime and compiler support (the undefined-symbol
  allowlist): ``cblas_dgemm``, ``dlsym``, ``fopen``, ``printf``, ``pthread_create`` or
  ``system`` are caught even when declared by hand.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

FORBIDDEN_HEADERS = re.compile(
    r"^(dlfcn|pthread|signal|setjmp|fcntl|spawn|sched|syscall|ucontext|poll|"
    r"mkl.*|cblas|lapacke|openblas.*|netdb|ifaddrs|termios|link|elf|ftw|glob|dirent|"
    r"sys/.*|netinet/.*|arpa/.*|linux/.*|asm/.*)\.h$"
)
# <unistd.h> is allowed for sysconf() (cache sizes, page size, processors): the object
# screen still refuses every other function it declares (write, fork, ...), and the
# system-call filter refuses what a kernel does not need at run time.
_WHY_HEADERS = "no processes, files, sockets, threads, signals, dynamic loading or BLAS in a kernel"
OUTSIDE = "code that runs outside the call (before main, at load or exit) is not allowed"
FORBIDDEN_TOKENS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(__asm__|__asm|asm)\b"), "inline assembly is not allowed"),
    (re.compile(r"\bsyscall\b"), "raw system calls are not allowed"),
    (
        re.compile(r"\b(__)?(constructor|destructor|init_priority)(__)?\b"),
        f"constructors/destructors: {OUTSIDE}",
    ),
    (
        re.compile(r"\b(__)?target_clones(__)?\b(?=\s*\()"),
        "target_clones makes the compiler emit an ifunc resolver, which runs when the "
        f'program is loaded: {OUTSIDE}. Instead put __attribute__((target("avx2"))) (or '
        "avx512f, ...) on static helper functions and choose one inside the kernel with "
        '__builtin_cpu_supports("avx2"); the file is already compiled with -march=native '
        "for this CPU",
    ),
    (
        re.compile(r"\b(__)?(ifunc|section)(__)?\b(?=\s*\()"),
        f"ifunc resolvers and named sections (.init_array, ...): {OUTSIDE} "
        "(target attributes are fine)",
    ),
    (
        re.compile(r"\b(__)?optimi[sz]e(__)?\b"),
        "changing the optimisation flags (optimize pragma or attribute) is not allowed",
    ),
    (re.compile(r"\b(__builtin_apply|__builtin_return)\b"), "this builtin is not allowed"),
    (re.compile(r"\b(dlopen|dlsym|dlvsym|RTLD_\w+)\b"), "dynamic loading is not allowed"),
    (re.compile(r"\b(cblas_\w+|dgemm_|mkl_\w+|openblas_\w+)\b"), "calling BLAS is not allowed"),
)
ALLOWED_SYMBOLS = frozenset(
    """
    malloc calloc realloc free aligned_alloc posix_memalign memalign
    memcpy memmove memset memcmp __memcpy_chk __memset_chk __memmove_chk
    sqrt sqrtf fabs fabsf fma fmaf fmin fmax fminf fmaxf floor ceil round trunc lround
    exp exp2 expf log log2 logf pow powf ldexp frexp copysign nearbyint rint
    sin cos sinf cosf tan atan atan2 tanh erf cbrt hypot expm1 log1p
    __stack_chk_fail __cpu_model __cpu_indicator_init __cpu_features2 _GLOBAL_OFFSET_TABLE_
    __assert_fail abort sysconf getpagesize
    omp_get_num_threads omp_get_thread_num omp_get_max_threads omp_get_num_procs
    omp_in_parallel omp_get_wtime omp_get_wtick omp_get_level omp_get_active_level
    omp_get_team_size omp_get_ancestor_thread_num omp_get_dynamic omp_get_thread_limit
    omp_get_nested omp_get_max_active_levels omp_get_schedule omp_get_proc_bind
    omp_get_num_places omp_get_place_num omp_get_default_device omp_is_initial_device
    omp_set_num_threads omp_set_dynamic omp_set_schedule omp_set_max_active_levels
    omp_init_lock omp_destroy_lock omp_set_lock omp_unset_lock omp_test_lock
    """.split()
)
# What gcc emits for OpenMP constructs; not GOMP_parallel_start/_end (a team left running
# after the function returns) nor the offloading entry points.
ALLOWED_PREFIXES = (
    "GOMP_parallel_loop_",
    "GOMP_loop_",
    "GOMP_critical_",
    "GOMP_atomic_",
    "GOMP_single_",
    "GOMP_sections",
    "GOMP_task",
    "GOMP_ordered_",
    "GOMP_barrier",
    "GOMP_doacross_",
    "GOMP_reduction",
)
ALLOWED_EXACT_GOMP = frozenset({"GOMP_parallel", "GOMP_parallel_sections"})
FORBIDDEN_SECTIONS = re.compile(r"^\.(init_array|fini_array|preinit_array|ctors|dtors|init|fini)")


@dataclass(frozen=True)
class ScreenResult:
    ok: bool
    status: str  # ok | forbidden_code | forbidden_symbol
    reason: str


OK = ScreenResult(True, "ok", "")


def strip_comments_and_strings(code: str) -> str:
    """Remove comments and string/char literals so words inside them do not count."""
    pattern = re.compile(
        r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.DOTALL
    )

    def repl(m: re.Match[str]) -> str:
        text = m.group(0)
        if text.startswith("/"):
            return " " * len(text) if "\n" not in text else "\n" * text.count("\n")
        return '""'

    return pattern.sub(repl, code)


def screen_source(code: str) -> ScreenResult:
    """A first, textual look at the raw file: includes of files by path, named clearly.

    Not the gate that matters (that is :func:`screen_includes` on the preprocessor's own
    list); it only gives the plain case a plain reason before anything is compiled.
    """
    for lineno, line in enumerate(code.splitlines(), 1):
        m = re.match(r'\s*#\s*include\s*([<"])([^>"]+)[>"]', line)
        if not m:
            continue
        quote, header = m.groups()
        if quote == '"' or header.startswith("/") or ".." in header:
            return ScreenResult(
                False, "forbidden_code", f"line {lineno}: #include of a file by path ({header})"
            )
    return OK


def screen_includes(opened: list[str], system_dirs: list[str]) -> ScreenResult:
    """The include gate over the files the preprocessor opened (from ``gcc -H``).

    ``opened`` holds (depth-prefixed) lines of ``-H`` output: ". /usr/include/stdio.h" is a
    direct include of the candidate, ".. /usr/include/x.h" an include of a header.
    """
    roots = [d.rstrip("/") + "/" for d in system_dirs]
    for line in opened:
        dots, _, path = line.partition(" ")
        path = path.strip()
        root = next((r for r in roots if path.startswith(r)), None)
        if root is None:
            return ScreenResult(
                False,
                "forbidden_code",
                f"#include of {path}: only the compiler's system headers may be included "
                "(a file by path or from the work dir is not a header)",
            )
        if len(dots) == 1 and FORBIDDEN_HEADERS.match(path[len(root) :]):
            header = path[len(root) :]
            return ScreenResult(
                False, "forbidden_code", f"#include <{header}> is not allowed ({_WHY_HEADERS})"
            )
    return OK


def candidate_lines(preprocessed: str, source_name: str) -> list[tuple[int, str]]:
    """The lines of ``gcc -E`` output that come from the candidate's own file, numbered
    as in that file (system headers are not screened: they are the compiler's)."""
    out: list[tuple[int, str]] = []
    current, lineno = None, 0
    marker = re.compile(r'^#\s*(?:line\s+)?(\d+)\s+"((?:\\.|[^"])*)"')
    for line in preprocessed.splitlines():
        m = marker.match(line)
        if m:
            lineno, current = int(m.group(1)), m.group(2)
            continue
        if current is not None and Path(current).name == source_name:
            out.append((lineno, line))
        lineno += 1
    return out


def screen_preprocessed(preprocessed: str, source_name: str) -> ScreenResult:
    """The token screen over the candidate's lines after preprocessing."""
    lines = candidate_lines(preprocessed, source_name)
    text = "\n".join(line for _, line in lines)
    clean = strip_comments_and_strings(text).splitlines()
    for (lineno, raw), line in zip(lines, clean, strict=False):
        for pattern, why in FORBIDDEN_TOKENS:
            hit = pattern.search(line)
            if hit:
                return ScreenResult(
                    False, "forbidden_code", f"line {lineno}: '{hit.group(0)}': {why}"
                )
        del raw
    return OK


def undefined_symbols(obj: Path, nm: str = "nm") -> list[str]:
    out = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True)
    return sorted({line.split()[-1] for line in out.stdout.splitlines() if line.strip()})


def defined_globals(obj: Path, nm: str = "nm") -> list[tuple[str, str]]:
    """(type letter, name) of every global or weak symbol the object defines."""
    out = subprocess.run(
        [nm, "-g", "--defined-only", str(obj)], capture_output=True, text=True, check=True
    )
    found = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            found.append((parts[-2], parts[-1]))
    return found


def section_names(obj: Path, readelf: str = "readelf") -> list[str]:
    out = subprocess.run(
        [readelf, "-S", "-W", str(obj)], capture_output=True, text=True, check=True
    )
    names = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)", line)
        if m:
            names.append(m.group(1))
    return names


def _allowed(sym: str) -> bool:
    if sym in ALLOWED_SYMBOLS or sym in ALLOWED_EXACT_GOMP:
        return True
    return sym.startswith(ALLOWED_PREFIXES)


def screen_symbols(obj: Path, function: str | None = None) -> ScreenResult:
    """The object screen: defined globals, constructor sections, the call allowlist."""
    if function is not None:
        extra = [
            f"{name} ({kind})"
            for kind, name in defined_globals(obj)
            if name != function or kind not in ("T", "t")
        ]
        if extra:
            return ScreenResult(
                False,
                "forbidden_symbol",
                f"the kernel defines global symbol(s) {', '.join(extra)}: only {function} may "
                "be global (a plain function); make helper functions and data static",
            )
        sections = [s for s in section_names(obj) if FORBIDDEN_SECTIONS.match(s)]
        if sections:
            return ScreenResult(
                False,
                "forbidden_symbol",
                f"the object has section(s) {', '.join(sections)} (constructors/destructors): "
                + OUTSIDE,
            )
    bad = [s for s in undefined_symbols(obj) if not _allowed(s)]
    if bad:
        return ScreenResult(
            False,
            "forbidden_symbol",
            f"the kernel links {', '.join(bad)}: only memory functions, libm and the OpenMP "
            "runtime may be called from a kernel",
        )
    return OK
