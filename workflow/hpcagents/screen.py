"""Static screening of untrusted candidate code, before and after compilation.

Two gates, each naming what it rejected so the PG can repair it:

* the **source screen** rejects what must never reach the compiler or the harness:
  headers for processes, files, sockets, threads, signals, dynamic loading or the
  reference library; inline assembly and raw syscalls; code that runs before ``main``
  (constructors); pragmas that change the fixed optimisation flags; includes of files by
  path (the compiler would read them).
* the **symbol allowlist** checks what the compiled object actually links: memory
  functions, libm, the OpenMP runtime and compiler support only. Calling
  ``cblas_dgemm``, ``dlsym``, ``fopen``, ``printf``, ``pthread_create`` or ``system``
  is caught here even when declared by hand without a header.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

FORBIDDEN_HEADERS = re.compile(
    r"^(dlfcn|unistd|pthread|signal|setjmp|fcntl|spawn|sched|syscall|ucontext|poll|"
    r"mkl.*|cblas|lapacke|openblas.*|netdb|ifaddrs|termios|link|elf|ftw|glob|dirent|"
    r"sys/.*|netinet/.*|arpa/.*|linux/.*|asm/.*)\.h$"
)
FORBIDDEN_TOKENS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(__asm__|__asm|asm)\b"), "inline assembly is not allowed"),
    (re.compile(r"\bsyscall\b"), "raw system calls are not allowed"),
    (
        re.compile(r"\b(constructor|destructor)\b"),
        "constructors/destructors run outside the timed call and are not allowed",
    ),
    (re.compile(r"\boptimize\b"), "changing the optimisation flags (optimize) is not allowed"),
    (re.compile(r"\b(__builtin_apply|__builtin_return)\b"), "this builtin is not allowed"),
    (re.compile(r"\b(dlopen|dlsym|dlvsym|RTLD_\w+)\b"), "dynamic loading is not allowed"),
    (re.compile(r"\b(cblas_\w+|dgemm_|mkl_\w+|openblas_\w+)\b"), "calling BLAS is not allowed"),
)
ALLOWED_SYMBOLS = frozenset(
    """
    malloc calloc realloc free aligned_alloc posix_memalign memalign
    memcpy memmove memset memcmp __memcpy_chk __memset_chk __memmove_chk
    sqrt sqrtf fabs fabsf fma fmaf fmin fmax floor ceil round trunc lround exp exp2 log log2
    pow ldexp frexp copysign nearbyint rint
    __stack_chk_fail __cpu_model __cpu_indicator_init __cpu_features2 _GLOBAL_OFFSET_TABLE_
    omp_get_num_threads omp_get_thread_num omp_get_max_threads omp_get_num_procs
    omp_in_parallel omp_get_wtime omp_get_level omp_get_team_size omp_get_dynamic
    """.split()
)
ALLOWED_PREFIXES = ("GOMP_",)


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
    """The source screen: the first reason found, with its line number."""
    for lineno, line in enumerate(code.splitlines(), 1):
        m = re.match(r'\s*#\s*include\s*([<"])([^>"]+)[>"]', line)
        if not m:
            continue
        quote, header = m.groups()
        if quote == '"' or header.startswith("/") or ".." in header:
            return ScreenResult(
                False, "forbidden_code", f"line {lineno}: #include of a file by path ({header})"
            )
        if FORBIDDEN_HEADERS.match(header):
            return ScreenResult(
                False,
                "forbidden_code",
                f"line {lineno}: #include <{header}> is not allowed (no processes, files, "
                "sockets, threads, signals, dynamic loading or BLAS in a kernel)",
            )
    clean = strip_comments_and_strings(code)
    for lineno, line in enumerate(clean.splitlines(), 1):
        if re.match(r"\s*#\s*include", line):
            continue
        for pattern, why in FORBIDDEN_TOKENS:
            hit = pattern.search(line)
            if hit:
                return ScreenResult(
                    False, "forbidden_code", f"line {lineno}: '{hit.group(0)}': {why}"
                )
    return OK


def undefined_symbols(obj: Path, nm: str = "nm") -> list[str]:
    out = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True)
    return sorted({line.split()[-1] for line in out.stdout.splitlines() if line.strip()})


def screen_symbols(obj: Path) -> ScreenResult:
    """The symbol allowlist over the candidate's object file."""
    bad = [
        s
        for s in undefined_symbols(obj)
        if s not in ALLOWED_SYMBOLS and not s.startswith(ALLOWED_PREFIXES)
    ]
    if bad:
        return ScreenResult(
            False,
            "forbidden_symbol",
            f"the kernel links {', '.join(bad)}: only memory functions, libm and the OpenMP "
            "runtime may be called from a kernel",
        )
    return OK
