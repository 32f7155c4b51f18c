"""A judge that trusts nothing the candidate's process says (issue 19).

Each class of attack is tried on every kernel it applies to, through the whole
evaluation (sandbox, system-call filter, freeze, fences). Most attacks here are written
by an adversary who already got past every static screen: the screens are switched off
(``no_screens``), so what rejects them is the judge's design, not a pattern match on
their spelling. Each is rejected with a status and a reason of its class; the honest
idioms beside them pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hpcagents.core.artifacts import validate
from hpcagents.judge import build, screen
from hpcagents.judge.arena import generate_inputs, plan, random_case
from hpcagents.judge.evaluate import evaluate_source
from hpcagents.judge.timing import BuildConfig, EvalConfig
from hpcagents.spec.kernelspec import KernelSpec, load_kernel

KERNELS = ["dgemm", "dgemv", "dsyrk", "spmv_csr", "stencil3d", "nbody"]
# small benches so every attack runs in about a second per kernel
BENCH = {"dgemm": 160, "dgemv": 600, "dsyrk": 160, "spmv_csr": 20000, "stencil3d": 48, "nbody": 400}


def cfg(kernel: str, **kw) -> EvalConfig:
    base = dict(repeats=3, warmup=1, timeout_s=30, bench_size=BENCH[kernel], memory_mb=1024)
    return EvalConfig(**{**base, **kw})


@pytest.fixture
def no_screens(monkeypatch):
    """An attacker who got past every static screen (source, includes, preprocessed text,
    object): only the judge's design stands between it and a result."""
    for name in ("screen_source", "screen_includes", "screen_preprocessed", "screen_symbols"):
        monkeypatch.setattr(build, name, lambda *a, **k: screen.OK)


def wrapped(kernel: KernelSpec, pre: str = "", post: str = "", prelude: str = "") -> str:
    """The kernel's own baseline renamed to a static helper, called by a wrapper that runs
    ``pre`` before it and ``post`` after it (C statements; the arguments are in scope)."""
    base = (kernel.directory / kernel.source).read_text()
    base = base.replace(f"void {kernel.function}(", "static void hpca_honest(", 1)
    args = ", ".join(p.name for p in kernel.parameters)
    sig = " ".join(kernel.signature.split()).rstrip(";")
    return (
        "#define _GNU_SOURCE\n#include <pthread.h>\n#include <unistd.h>\n#include <string.h>\n"
        "#include <stdlib.h>\n#include <sys/syscall.h>\n#include <sys/mman.h>\n"
        "#include <signal.h>\n#include <stdio.h>\n"
        + base
        + "\n"
        + prelude
        + f"\n{sig} {{\n{pre}\n  hpca_honest({args});\n{post}\n}}\n"
    )


def run(tmp_path: Path, kernel: KernelSpec, code: str, **kw) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / kernel.source
    src.write_text(code)
    rec = evaluate_source(kernel, src, tmp_path / "work", BuildConfig(), cfg(kernel.name, **kw))
    validate(rec, "evaluation")
    return rec


# The runner's command line ("c <16 hex digits>") lies in its main frame, above the
# kernel's: an attacker can find the call's nonce there and forge the runner's answer.
FIND_NONCE = r"""
static int hpca_find_nonce(char *out) {
    volatile unsigned char here = 0;
    const unsigned char *p = (const unsigned char *)&here;
    for (int i = 0; i < 6000; i++) {
        if (p[i] != 'c' || p[i + 1] != ' ' || p[i + 18] != 0) continue;
        int hex = 1;
        for (int j = 2; j < 18; j++)
            hex &= (p[i + j] >= '0' && p[i + j] <= '9') || (p[i + j] >= 'a' && p[i + j] <= 'f');
        if (hex) { memcpy(out, p + i + 2, 16); out[16] = 0; return 1; }
    }
    return 0;
}
static void hpca_forge_done(void) {
    char nonce[17], line[20] = "d ";
    if (!hpca_find_nonce(nonce)) return;
    memcpy(line + 2, nonce, 16); line[18] = '\n';
    (void)!write(1, line, 19);
}
"""


@pytest.mark.parametrize("name", KERNELS)
def test_a_forged_early_answer_only_cuts_the_work_short(tmp_path, no_screens, name):
    """The candidate answers "done" for the runner, with the right nonce, before it does
    the work: the judge freezes the whole process at that answer, so the work never
    finishes (wrong outputs), or, on a call so small that it finished during the freeze,
    the runner's own answer comes on top of the forged one (bytes nobody asked for)."""
    kernel = load_kernel(name)
    rec = run(tmp_path, kernel, wrapped(kernel, pre="  hpca_forge_done();", prelude=FIND_NONCE))
    assert rec["status"] in ("wrong_answer", "tampering"), rec["reason"]
    assert rec["timing"] is None


def test_an_answer_without_the_call_nonce_is_tampering(tmp_path, no_screens):
    kernel = load_kernel("dgemm")
    code = wrapped(kernel, pre='  (void)!write(1, "d\\n", 2);')
    rec = run(tmp_path, kernel, code)
    assert rec["status"] == "tampering", rec["reason"]
    assert "command channel" in rec["reason"]


def test_a_second_answer_after_the_work_is_tampering(tmp_path, no_screens):
    """Work done honestly, then one more "done" with the nonce: the extra answer is found
    on the channel, and the candidate fails."""
    kernel = load_kernel("dgemm")
    rec = run(tmp_path, kernel, wrapped(kernel, post="  hpca_forge_done();", prelude=FIND_NONCE))
    assert rec["status"] == "tampering", rec["reason"]
    # found before the next command (bytes nobody asked for) or, when the freeze took
    # hold before the runner's own answer, as a stale answer to the next call
    assert re.search(r"wrote \d+ byte|instead of the runner's answer", rec["reason"])


@pytest.mark.alone  # beside the other xdist worker its late thread raced in the race check
@pytest.mark.parametrize("name", ["dgemm", "dgemv", "stencil3d"])
def test_work_left_to_a_thread_after_the_answer_does_not_count(tmp_path, no_screens, name):
    """The call hands its work to a thread and returns at once: the process is frozen at
    the answer, so the thread's work is not in the outputs the judge reads."""
    kernel = load_kernel(name)
    slot = {"array": "p", "scalar": "d"}
    casts = ", ".join(
        f"({p.ctype})hpca_s[{i}].{slot.get(p.kind, 'i')}" for i, p in enumerate(kernel.parameters)
    )
    stores = "".join(
        f"  hpca_s[{i}].{slot.get(p.kind, 'i')} = "
        f"{'(void *)' if p.kind == 'array' else ''}{p.name};\n"
        for i, p in enumerate(kernel.parameters)
    )
    base = (kernel.directory / kernel.source).read_text()
    base = base.replace(f"void {kernel.function}(", "static void hpca_honest(", 1)
    sig = " ".join(kernel.signature.split()).rstrip(";")
    code = (
        "#include <pthread.h>\n#include <unistd.h>\n"
        + base
        + "\nunion hpca_slot { long i; double d; void *p; };\n"
        "static union hpca_slot hpca_s[32];\n"
        f"static void *hpca_late(void *x) {{ (void)x; usleep(20000); hpca_honest({casts}); "
        "return 0; }\n"
        f"{sig} {{\n{stores}  pthread_t t; pthread_create(&t, 0, hpca_late, 0);\n"
        "  pthread_detach(t);\n}\n"
    )
    rec = run(tmp_path, kernel, code)
    # on a quiet host the answer comes first and the frozen thread's work is missing
    # (wrong_answer); on a loaded one the thread may finish before the answer, and the
    # race check sees it write the outputs unsynchronised (data_race): never a pass
    assert rec["status"] in ("wrong_answer", "data_race"), rec["reason"]


SPINNER = r"""
static volatile double hpca_sink;
static void *hpca_spin(void *x) { for (;;) hpca_sink += 1.0; return x; }
static int hpca_started;
"""


def test_a_thread_that_never_stops_is_frozen_while_the_reference_is_timed(tmp_path, no_screens):
    """A thread spinning for ever cannot slow the reference (or a rival): it runs only
    inside the candidate's own calls. The record shows no CPU used while frozen."""
    kernel = load_kernel("dgemm")
    pre = (
        "  if (!hpca_started) { pthread_t t; hpca_started = 1; "
        "pthread_create(&t, 0, hpca_spin, 0); }"
    )
    rec = run(tmp_path, kernel, wrapped(kernel, pre=pre, prelude=SPINNER))
    assert rec["status"] == "ok", rec["reason"]
    assert rec["timing"]["frozen_cpu_s"] == 0.0


BURN_AND_EXIT = r"""
#include <time.h>
static void *hpca_burn(void *x) {
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    do { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b); }
    while ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec) < 3e7);
    return x;
}
"""


def test_cpu_of_threads_that_exited_is_counted(tmp_path, no_screens):
    """Each call starts a thread that burns 30 ms of CPU and exits before the call
    returns: the per-call CPU of the whole process includes it (nothing is sampled from
    the threads still alive)."""
    kernel = load_kernel("dgemm")
    pre = "  pthread_t t; pthread_create(&t, 0, hpca_burn, 0); pthread_join(t, 0);"
    rec = run(tmp_path, kernel, wrapped(kernel, pre=pre, prelude=BURN_AND_EXIT))
    assert rec["status"] == "ok", rec["reason"]
    assert len(rec["timing"]["cpu_s"]) == 3
    assert min(rec["timing"]["cpu_s"]) >= 0.025, rec["timing"]["cpu_s"]


# -- the system-call filter --------------------------------------------------------------

SYSCALLS = {
    "fork": ("  if (syscall(SYS_fork) == 0) _exit(0);", "fork"),
    "raw_clone_of_a_process": ("  syscall(SYS_clone, (long)SIGCHLD, 0L, 0L, 0L, 0L);", "clone"),
    "socket": ("  syscall(SYS_socket, 2L, 1L, 0L);", "socket"),
    "signal_to_another_process": ("  syscall(SYS_kill, 1L, (long)SIGSTOP);", "kill"),
    "write_to_another_fd": ('  syscall(SYS_write, 5L, "x", 1L);', "write"),
    "signal_handler_of_its_own": (
        "  struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = SIG_IGN;\n"
        "  sigaction(SIGSEGV, &sa, 0);",
        "rt_sigaction",
    ),
    "ptrace": ("  syscall(SYS_ptrace, 16L, 1L, 0L, 0L);", "ptrace"),
    "unprotect_the_inputs": (
        "  long pg = sysconf(_SC_PAGESIZE);\n"
        "  mprotect((void *)((unsigned long)A & ~(unsigned long)(pg - 1)), (size_t)pg, 3);",
        "judge's arguments",
    ),
    "map_over_the_inputs": (
        "  long pg = sysconf(_SC_PAGESIZE);\n"
        "  mmap((void *)((unsigned long)A & ~(unsigned long)(pg - 1)), (size_t)pg, 3, "
        "0x32, -1, 0);",
        "judge's arguments",
    ),
    "unmap_the_inputs_from_below": (
        "  long pg = sysconf(_SC_PAGESIZE);\n"
        "  munmap((void *)(((unsigned long)A & ~(unsigned long)(pg - 1)) - 1024 * pg), "
        "(size_t)(1025 * pg));",
        "judge's arguments",
    ),
}


@pytest.mark.parametrize("name", sorted(SYSCALLS))
def test_a_forbidden_system_call_kills_the_run_with_its_name(tmp_path, no_screens, name):
    pre, word = SYSCALLS[name]
    kernel = load_kernel("dgemm")
    rec = run(tmp_path, kernel, wrapped(kernel, pre=pre))
    assert rec["status"] == "forbidden_syscall", rec["reason"]
    assert word in rec["reason"], rec["reason"]


def test_files_cannot_be_opened_even_past_the_screens(tmp_path, no_screens):
    """open/openat answer EACCES (glibc's own look-ups fall back); a kernel that could
    read a host file would leave C[0] wrong here."""
    kernel = load_kernel("dgemm")
    post = '  FILE *f = fopen("/etc/hostname", "r");\n  if (f && m > 0 && n > 0) C[0] = 1e300;'
    rec = run(tmp_path, kernel, wrapped(kernel, post=post))
    assert rec["status"] == "ok", rec["reason"]


# -- fences ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KERNELS)
def test_an_input_used_as_scratch_and_restored_faults_during_the_call(tmp_path, no_screens, name):
    """Inputs are mapped read-only in the candidate's process: the first write faults,
    even one that would be undone before the call returns."""
    kernel = load_kernel(name)
    arr = next(p for p in kernel.parameters if p.kind == "array" and p.intent == "in")
    ctype = "int" if arr.type == "int" else "double"
    pre = (
        f"  volatile {ctype} *hpca_w = (volatile {ctype} *)(void *){arr.name};\n"
        f"  {ctype} hpca_keep = hpca_w[0]; hpca_w[0] = hpca_keep + 1; hpca_w[0] = hpca_keep;"
    )
    rec = run(tmp_path, kernel, wrapped(kernel, pre=pre))
    assert rec["status"] == "crash", rec["reason"]
    assert "read-only" in rec["reason"] and arr.name in rec["reason"], rec["reason"]


def test_bytes_between_the_arrays_are_fenced(tmp_path, no_screens):
    """A byte past the end of the output (in the room the frame keeps for larger cases)
    is compared bit for bit after every call."""
    kernel = load_kernel("dgemm")
    post = "  if (m > 0) ((unsigned char *)(C + (long)(m - 1) * ldc + ldc))[100] ^= 1;"
    rec = run(tmp_path, kernel, wrapped(kernel, post=post))
    assert rec["status"] == "wrong_answer", rec["reason"]
    assert "past the end of C" in rec["reason"], rec["reason"]


def test_dsyrk_upper_triangle_must_come_back_bit_for_bit(tmp_path, no_screens):
    """One ulp above the diagonal is within any tolerance, and still a write the routine
    must not make (BLAS leaves the other triangle to the caller)."""
    kernel = load_kernel("dsyrk")
    post = (
        "  if (n > 1) { double *x = &C[1]; unsigned long u; memcpy(&u, x, 8); u ^= 1;"
        " memcpy(x, &u, 8); }"
    )
    rec = run(tmp_path, kernel, wrapped(kernel, post=post))
    assert rec["status"] == "wrong_answer", rec["reason"]
    assert "must not be written" in rec["reason"] and "j <= i" in rec["reason"], rec["reason"]


def test_honest_dsyrk_passes_with_the_triangle_fenced(tmp_path):
    kernel = load_kernel("dsyrk")
    rec = run(tmp_path, kernel, (kernel.directory / kernel.source).read_text())
    assert rec["status"] == "ok", rec["reason"]


# -- inputs that look like real data -----------------------------------------------------


def test_csr_rows_are_ragged_and_some_are_empty():
    kernel = load_kernel("spmv_csr")
    lay = plan(kernel, kernel.bench)
    data = generate_inputs(kernel, lay, np.random.default_rng(5))
    lengths = np.diff(data["row_ptr"])
    assert lengths.min() == 0 and (lengths == 0).mean() > 0.05
    assert lengths.max() > 4 * lengths.mean()
    cols = data["col_idx"]
    starts = data["row_ptr"][:-1]
    for r in np.flatnonzero(lengths > 1)[:200]:
        row = cols[starts[r] : starts[r] + lengths[r]]
        assert (np.diff(row) > 0).all() and row.max() < int(lay.names["n"])


def test_spmv_that_assumes_equal_rows_fails(tmp_path):
    kernel = load_kernel("spmv_csr")
    code = (
        "void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,\n"
        "                     const double *val, const double *x, double *y) {\n"
        "  (void)n; int per = m > 0 ? row_ptr[m] / m : 0;\n"
        "  for (int i = 0; i < m; i++) { double s = 0;\n"
        "    for (int p = i * per; p < (i + 1) * per; p++) s += val[p] * x[col_idx[p]];\n"
        "    y[i] = s; } }\n"
    )
    rec = run(tmp_path, kernel, code)
    assert rec["status"] == "wrong_answer", rec["reason"]


def test_a_kernel_right_only_at_the_published_sizes_fails_the_unpredictable_case(tmp_path):
    """Right at every size of kernel.yaml and at the bench, wrong anywhere else: the case
    whose sizes the judge draws for each evaluation catches it."""
    kernel = load_kernel("dgemm")
    known = [(int(c["m"]), int(c["n"]), int(c["k"])) for c in kernel.cases]
    known.append((BENCH["dgemm"],) * 3)
    cond = " || ".join(f"(m == {a} && n == {b} && k == {c})" for a, b, c in known)
    base = (kernel.directory / kernel.source).read_text()
    code = base.replace("void kernel_dgemm(", "static void hpca_honest(", 1) + (
        "\nvoid kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,\n"
        "  const double *B, int ldb, double beta, double *C, int ldc) {\n"
        f"  if ({cond}) hpca_honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n"
        "  else for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) C[(long)i*ldc+j] = 0;\n"
        "}\n"
    )
    for seed in (1, 2, 3):
        src = tmp_path / f"k{seed}.c"
        src.write_text(code)
        rec = evaluate_source(kernel, src, tmp_path / f"w{seed}", BuildConfig(), cfg("dgemm"), seed)
        assert rec["status"] == "wrong_answer", rec["reason"]
        drawn = [c for c in rec["validation"]["cases"] if not c["ok"]]
        assert drawn and tuple(drawn[0]["case"][x] for x in "mnk") not in known


def test_every_kernel_gets_a_case_it_cannot_predict():
    for name in KERNELS:
        kernel = load_kernel(name)
        a = random_case(kernel, np.random.default_rng(1))
        b = random_case(kernel, np.random.default_rng(2))
        assert a.values != b.values, name
        assert plan(kernel, a).size > 0


# -- honest idioms -----------------------------------------------------------------------


def test_sysconf_from_unistd_is_an_honest_idiom(tmp_path):
    kernel = load_kernel("dgemm")
    base = (kernel.directory / kernel.source).read_text()
    code = (
        "#include <unistd.h>\n"
        + base.replace("void kernel_dgemm(", "static void hpca_honest(", 1)
        + (
            "\nvoid kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,\n"
            "  const double *B, int ldb, double beta, double *C, int ldc) {\n"
            "  long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE), cpus = sysconf(_SC_NPROCESSORS_ONLN);\n"
            "  (void)l2; (void)cpus;\n"
            "  hpca_honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n}\n"
        )
    )
    rec = run(tmp_path, kernel, code)
    assert rec["status"] == "ok", rec["reason"]


def test_target_clones_is_refused_with_what_to_do_instead(tmp_path):
    kernel = load_kernel("dgemm")
    base = (kernel.directory / kernel.source).read_text()
    code = base.replace(
        "void kernel_dgemm(",
        '__attribute__((target_clones("avx2", "default"))) void kernel_dgemm(',
        1,
    )
    rec = run(tmp_path, kernel, code)
    assert rec["status"] == "forbidden_code", rec["reason"]
    assert "__builtin_cpu_supports" in rec["reason"] and "ifunc" in rec["reason"]


def test_honest_baselines_pass_under_the_filter_and_the_freeze(tmp_path):
    """The filter and the freeze cost nothing in honesty: every baseline passes, and no
    CPU is used while a process is frozen."""
    for name in KERNELS:
        kernel = load_kernel(name)
        rec = run(tmp_path / name, kernel, (kernel.directory / kernel.source).read_text())
        assert rec["status"] == "ok", f"{name}: {rec['reason']}"
        assert rec["timing"]["frozen_cpu_s"] == 0.0
        assert rec["provenance"]["sandbox"]["seccomp"] is True
