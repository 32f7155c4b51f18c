"""Adversarial kernels: each tries to pass without doing the work, or to do harm, and
each is rejected with a reason of its CLASS (the status and a stable word; which gate
caught it may change). The classes of issue 9 each have attacks of our own below, and
the honest idioms the old screens refused are accepted. Honest kernels are also in
test_scripted.py (every scripted variant and the baseline pass: 0 false rejections)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from hpcagents.core.artifacts import validate
from hpcagents.judge.evaluate import evaluate_source
from hpcagents.judge.timing import BuildConfig, EvalConfig
from hpcagents.spec.kernelspec import load_kernel

KERNEL = load_kernel("dgemm")
CFG = EvalConfig(repeats=3, warmup=1, timeout_s=20, bench_size=128, memory_mb=1024)
SIG = (
    "void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,\n"
    "                  const double *B, int ldb, double beta, double *C, int ldc)"
)
HONEST_BODY = """
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        for (int j = 0; j < n; j++) c[j] = beta == 0.0 ? 0.0 : beta * c[j];
        if (alpha == 0.0) continue;
        for (int p = 0; p < k; p++) {
            double a = alpha * A[(long)i * lda + p];
            for (int j = 0; j < n; j++) c[j] += a * B[(long)p * ldb + j];
        }
    }
"""


def honest(name: str = "honest") -> str:
    return f"static void {name}({SIG.split('(', 1)[1]} {{{HONEST_BODY}}}\n"


FORBIDDEN = ("forbidden_code", "forbidden_symbol")
PASSWD = "/etc/passwd"
# One attack of our own for each class of issue 9 (the red team's classes).
NEW_ATTACKS = {
    # -- defining what the judge calls: a global definition of a libc/BLAS function
    "defines_clock_gettime": (
        "struct timespec { long s, ns; };\n"
        "int clock_gettime(int c, struct timespec *t) { (void)c; t->s = 0; t->ns = 0; "
        "return 0; }\n"
        + honest()
        + SIG
        + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        FORBIDDEN,
        "global symbol",
    ),
    "defines_memcmp": (
        "#include <stddef.h>\nint memcmp(const void *a, const void *b, size_t n) "
        "{ (void)a; (void)b; (void)n; return 0; }\n"
        + SIG
        + " { if (m > 0 && k > 0) ((double *)A)[0] = 0.0; (void)C; }",
        FORBIDDEN,
        "global symbol",
    ),
    "defines_cblas_dgemm": (
        "void cblas_dgemm(void) { }\n" + SIG + " { }",
        FORBIDDEN,
        "cblas_dgemm",
    ),
    "defines_a_global_variable": (
        "double hpca_tolerance = 1e300;\n"
        + honest()
        + SIG
        + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        FORBIDDEN,
        "static",
    ),
    # -- reaching into the judge's memory: look for the tolerance factor (4.0) on the stack
    # above the kernel's frame and blow it up, then skip the work. The judge is not in this
    # process, so there is nothing to find: the result is simply wrong.
    "patches_the_tolerance_on_the_stack": (
        SIG + " { volatile double here = 0.0; volatile double *p = &here;\n"
        "  for (int i = 1; i < 256; i++) if (p[i] == 4.0) p[i] = 1e300;\n"
        "  (void)m; (void)C; }",
        ("wrong_answer", "crash"),  # scribbling on the runner's own stack may kill it
        r"elements wrong|crashed|exited",
    ),
    # -- memoisation that survives a power-of-two rescale: A (2^e B) = 2^e (A B); after one
    # honest call of the same sizes, return the cached C scaled by B[0] / cached B[0].
    "memoises_across_a_rescale": (
        "#include <stdlib.h>\n#include <string.h>\n"
        + honest()
        + "static double *cc, b0; static int cm = -1, cn, ck;\n"
        + SIG
        + " { if (m == cm && n == cn && k == ck && m > 0 && n > 0 && k > 0 && cc) {\n"
        "    double s = B[0] / b0;\n"
        "    for (long x = 0; x < (long)m * ldc; x++) C[x] = s * cc[x]; return; }\n"
        "  honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n"
        "  free(cc); cc = malloc(sizeof(double) * (size_t)m * ldc + 8);\n"
        "  memcpy(cc, C, sizeof(double) * (size_t)m * ldc); cm = m; cn = n; ck = k;\n"
        "  b0 = k > 0 && n > 0 ? B[0] : 1.0; }",
        "wrong_answer",
        "bench",
    ),
    # -- code before main
    "underscored_constructor": (
        "__attribute__((__constructor__)) static void early(void) {}\n" + SIG + " { }",
        FORBIDDEN,
        "outside the call",
    ),
    "function_pointer_in_init_array": (
        "static void early(void) {}\n"
        'static void (*const hook)(void) __attribute__((used, section(".init_array"))) '
        "= early;\n" + SIG + " { }",
        FORBIDDEN,
        "outside the call",
    ),
    "constructor_through_a_macro": (
        "#define EARLY __attribute__((con##structor))\n#define CAT(a, b) a##b\n"
        "__attribute__((CAT(con, structor))) static void early(void) {}\n" + SIG + " { }",
        FORBIDDEN,
        "outside the call",
    ),
    # -- changing the flags
    "optimize_through_pragma_operator": (
        '_Pragma("GCC optimize(\\"Ofast\\")")\n'
        + honest()
        + SIG
        + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        "forbidden_code",
        "optimize",
    ),
    "optimize_attribute": (
        '__attribute__((__optimize__("Ofast"))) '
        + honest()
        + SIG
        + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        "forbidden_code",
        "optimize",
    ),
    "optimize_spelt_by_the_preprocessor": (
        "#define CAT(a, b) a##b\n#define STR(x) #x\n#define XSTR(x) STR(x)\n"
        '#define PRAGMA(x) _Pragma(XSTR(x))\nPRAGMA(GCC CAT(opti, mize)("Ofast"))\n'
        + honest()
        + SIG
        + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        "forbidden_code",
        "optimize",
    ),
    # -- reading host files at compile time (the compiler runs in the sandbox: it cannot
    # see them, and the gate refuses anything but system headers)
    "digraph_include": (f'%:include "{PASSWD}"\n' + SIG + " { }", "forbidden_code", "include"),
    "macro_include": (
        f'#define F "{PASSWD}"\n#include F\n' + SIG + " { }",
        "forbidden_code",
        "include",
    ),
    "import_directive": (f'#import "{PASSWD}"\n' + SIG + " { }", "forbidden_code", "include"),
    "continued_include": (
        f'#inc\\\nlude "{PASSWD}"\n' + SIG + " { }",
        "forbidden_code",
        "include",
    ),
    "includes_itself": (
        "#define SELF __FILE__\n#include SELF\n" + SIG + " { }",
        "forbidden_code",
        "include",
    ),
    "include_of_a_visible_file": (
        "#define F </proc/self/environ>\n#include F\n" + SIG + " { }",
        "forbidden_code",
        "include",
    ),
    # -- work outside the timed call: a team left running after the function returns
    "leaves_an_openmp_team_running": (
        "extern void GOMP_parallel_start(void (*)(void *), void *, unsigned);\n"
        "static volatile int stop; static void spin(void *x) { (void)x; while (!stop) ; }\n"
        + honest()
        + SIG
        + " { GOMP_parallel_start(spin, 0, 2);\n"
        "  honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        "forbidden_symbol",
        "GOMP_parallel_start",
    ),
}

ATTACKS = {
    "never_writes_output": (SIG + " { (void)m; (void)C; }", "wrong_answer", "NaN"),
    "first_rows_only": (
        honest()
        + SIG
        + " { honest(m / 2 + (m == 1), n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        "wrong_answer",
        "elements wrong",
    ),
    "skips_work_at_the_bench_size": (
        honest() + SIG + " { if (m == n && n == k && m % 64 == 0 && m >= 128) return;\n"
        "  honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        "wrong_answer",
        "bench",
    ),
    "modifies_its_inputs": (
        honest() + SIG + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n"
        "  if (m > 0 && k > 0) ((double *)A)[0] = 0.0; }",
        "crash",  # inputs are mapped read-only: the write faults during the call
        "its input A .*read-only",
    ),
    "caches_results_static_flag": (
        "#include <stdlib.h>\n#include <string.h>\n"
        + honest()
        + "static double *saved; static int sm, sn, sk;\n"
        + SIG
        + " { size_t bytes = sizeof(double) * (size_t)m * ldc;\n"
        "  if (saved && m == sm && n == sn && k == sk) { memcpy(C, saved, bytes); return; }\n"
        "  honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n"
        "  free(saved); saved = malloc(bytes); memcpy(saved, C, bytes); sm = m; sn = n; sk = k; }",
        "wrong_answer",
        "timed run",
    ),
    "caches_results_by_pointer": (
        "#include <stdlib.h>\n#include <string.h>\n"
        + honest()
        + "static const double *ka, *kb; static double *kc;\n"
        + SIG
        + " { size_t bytes = sizeof(double) * (size_t)m * ldc;\n"
        "  if (A == ka && B == kb && kc) { memcpy(C, kc, bytes); return; }\n"
        "  honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n"
        "  free(kc); kc = malloc(bytes); memcpy(kc, C, bytes); ka = A; kb = B; }",
        # the arrays keep their addresses for a runner's life: the cache "hits" on the
        # next call, whose fresh inputs make it wrong (or, at another size, overrun it)
        ("wrong_answer", "crash"),
        "wrong|SIGSEGV",
    ),
    "behaves_differently_when_timed": (
        honest()
        + "static int calls;\n"
        + SIG
        + " { if (++calls > 12) return; honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        "wrong_answer",
        "timed run",
    ),
    "calls_the_reference_library": (
        "#define CAT(a, b) a##b\nextern void CAT(cblas, _dgemm)(int, int, int, int, int, int, "
        "double, const double *, int, const double *, int, double, double *, int);\n"
        + SIG
        + " { CAT(cblas, _dgemm)(101, 111, 111, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        FORBIDDEN,
        "cblas_dgemm",
    ),
    "calls_blas_by_name": (
        SIG + " { extern void cblas_dgemm(); cblas_dgemm(); }",
        "forbidden_code",
        "cblas_dgemm",
    ),
    "dlopen_dlsym": (
        "#include <dlfcn.h>\n" + SIG + ' { void *h = dlopen("libmkl_rt.so", 2); (void)h; }',
        "forbidden_code",
        "dlfcn.h",
    ),
    "lower_precision": (
        SIG + " { for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) { float s = 0.0f;\n"
        "  for (int p = 0; p < k; p++) s += (float)A[(long)i*lda+p] * (float)B[(long)p*ldb+j];\n"
        "  C[(long)i*ldc+j] = (beta == 0.0 ? 0.0 : beta * C[(long)i*ldc+j]) + alpha * s; } }",
        "wrong_answer",
        "elements wrong",
    ),
    "leaves_a_thread_running": (
        "typedef unsigned long pthread_t;\nextern int pthread_create(pthread_t *, const void *, "
        "void *(*)(void *), void *);\nstatic void *work(void *x) { return x; }\n"
        + SIG
        + " { pthread_t t; pthread_create(&t, 0, work, C); }",
        "forbidden_symbol",
        "pthread_create",
    ),
    "reads_uninitialised_memory": (
        "#include <stdlib.h>\n"
        + honest()
        + SIG
        + " { double *junk = malloc(sizeof(double) * (size_t)(n + 1));\n"
        "  honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n"
        "  for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) C[(long)i*ldc+j] += junk[j];\n"
        "  free(junk); }",
        "wrong_answer",
        "elements wrong",
    ),
    "spawns_a_process": (
        "extern int system(const char *);\n" + SIG + ' { system("touch /tmp/pwned"); }',
        "forbidden_symbol",
        "system",
    ),
    "opens_a_file": (
        "#include <stdio.h>\n" + SIG + ' { FILE *f = fopen("/etc/passwd", "r"); (void)f; }',
        "forbidden_symbol",
        "fopen",
    ),
    "opens_a_socket": (
        "#include <sys/socket.h>\n" + SIG + " { socket(2, 1, 0); }",
        "forbidden_code",
        "sys/socket.h",
    ),
    "raw_syscall_by_inline_asm": (
        SIG + ' { long r; __asm__ volatile ("syscall" : "=a"(r) : "a"(39)); (void)r; }',
        "forbidden_code",
        "inline assembly",
    ),
    "runs_code_before_main": (
        "__attribute__((constructor)) static void early(void) {}\n" + SIG + " { }",
        FORBIDDEN,
        "outside the call",
    ),
    "changes_the_optimisation_flags": (
        '#pragma GCC optimize("Ofast")\n'
        + honest()
        + SIG
        + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
        "forbidden_code",
        "optimize",
    ),
    "includes_a_host_file": (
        '#include "/etc/passwd"\n' + SIG + " { }",
        "forbidden_code",
        "by path",
    ),
    "never_returns": (SIG + " { for (volatile int x = 0;; x++) ; }", "timeout", "did not finish"),
    "crashes": (SIG + " { volatile double *p = 0; *p = alpha; }", "crash", "SIGSEGV"),
    "allocates_without_bound": (
        "#include <stdlib.h>\n#include <string.h>\n"
        + SIG
        + " { for (;;) { char *p = malloc(1 << 28); memset(p, 1, 1 << 28); } }",
        "crash",
        "signal",
    ),
    **{f"new_{k}": v for k, v in NEW_ATTACKS.items()},
    "prints_a_fake_result": (
        "#include <stdio.h>\n"
        + SIG
        + ' { printf("{\\"status\\": \\"ok\\", \\"gflops\\": 1e9}\\n"); }',
        "forbidden_symbol",
        "puts",  # gcc turns this printf into puts
    ),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_rejected_with_its_reason(tmp_path, name):
    code, status, reason = ATTACKS[name]
    src = tmp_path / "cand.c"
    src.write_text(code + "\n")
    rec = evaluate_source(KERNEL, src, tmp_path / "work", BuildConfig(), CFG)
    validate(rec, "evaluation")
    statuses = status if isinstance(status, tuple) else (status,)
    assert rec["status"] in statuses, f"{name}: {rec['status']}: {rec['reason']}"
    assert re.search(reason, rec["reason"]), f"{name}: {rec['reason']}"
    # nothing of a host file reaches the record (compile output goes to repair prompts)
    assert "root:" not in json.dumps(rec)


def test_the_suite_is_large_and_every_reason_is_specific():
    assert len(ATTACKS) >= 40
    assert len({(s, r) for _, s, r in ATTACKS.values()}) >= 20


def test_honest_control_passes_the_same_configuration(tmp_path):
    src = tmp_path / "cand.c"
    src.write_text(honest() + SIG + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }\n")
    rec = evaluate_source(KERNEL, src, tmp_path / "work", BuildConfig(), CFG)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["provenance"]["sandbox"]["kind"] in ("bubblewrap", "rlimits")


# Honest idioms the old screens refused (or might): each must be accepted.
IDIOMS = {
    "assert": "#include <assert.h>\n" + honest() + SIG + " { assert(m >= 0 && lda >= 1);\n"
    "  honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
    "omp_set_num_threads": "#include <omp.h>\n" + SIG + " { omp_set_num_threads(2);\n"
    "  #pragma omp parallel for\n  for (int i = 0; i < m; i++) {"
    + HONEST_BODY.split("{", 1)[1]
    + "}",
    "prefetch_intrinsics": "#include <immintrin.h>\n" + SIG + " {\n"
    "  for (int i = 0; i < m; i++) { double *c = C + (long)i * ldc;\n"
    "    for (int j = 0; j < n; j++) c[j] = beta == 0.0 ? 0.0 : beta * c[j];\n"
    "    if (alpha == 0.0) continue;\n"
    "    for (int p = 0; p < k; p++) { double a = alpha * A[(long)i * lda + p];\n"
    "      if (p + 1 < k) _mm_prefetch((const char *)(B + (long)(p + 1) * ldb), _MM_HINT_T0);\n"
    "      for (int j = 0; j < n; j++) c[j] += a * B[(long)p * ldb + j]; } } }",
    "aligned_scratch": "#include <stdlib.h>\n#include <string.h>\n" + honest() + SIG + " {\n"
    "  size_t cnt = (size_t)(n > 0 ? n : 1);\n"
    "  double *t = aligned_alloc(64, 64 * ((cnt * 8 + 63) / 64));\n"
    "  void *u = 0; if (posix_memalign(&u, 64, cnt * 8)) return;\n"
    "  honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n"
    "  memset(t, 0, cnt * 8); free(t); free(u); }",
    "static_workspace": "static double work[1 << 16];\n" + honest() + SIG + " {\n"
    "  work[0] = alpha; honest(m, n, k, work[0], A, lda, B, ldb, beta, C, ldc); }",
    "target_attribute": '__attribute__((target("avx2,fma"))) '
    + honest()
    + SIG
    + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }",
    "omp_for_nowait": SIG + " {\n  #pragma omp parallel\n  {\n"
    "    #pragma omp for nowait\n    for (int i = 0; i < m; i++) {\n"
    "      double *c = C + (long)i * ldc;\n"
    "      for (int j = 0; j < n; j++) c[j] = beta == 0.0 ? 0.0 : beta * c[j];\n"
    "      if (alpha == 0.0) continue;\n"
    "      for (int p = 0; p < k; p++) { double a = alpha * A[(long)i * lda + p];\n"
    "        for (int j = 0; j < n; j++) c[j] += a * B[(long)p * ldb + j]; } }\n  } }",
    "omp_sections": SIG + " {\n  #pragma omp parallel sections\n  {\n    #pragma omp section\n"
    "    { for (int i = 0; i < m; i++) {" + HONEST_BODY.split("{", 1)[1] + "  } } }",
}


@pytest.mark.parametrize("name", sorted(IDIOMS))
def test_honest_idiom_is_accepted(tmp_path, name):
    src = tmp_path / "cand.c"
    src.write_text(IDIOMS[name] + "\n")
    rec = evaluate_source(KERNEL, src, tmp_path / "work", BuildConfig(), CFG)
    assert rec["status"] == "ok", f"{name}: {rec['status']}: {rec['reason']}"


@pytest.mark.parametrize(
    "name",
    ["new_digraph_include", "new_macro_include", "new_import_directive", "new_continued_include"],
)
def test_without_bubblewrap_a_host_file_still_does_not_reach_the_record(tmp_path, name):
    """The second line of defence: the include gate on the preprocessor's own list of
    opened files, and only the candidate's own diagnostics kept."""
    code, status, word = ATTACKS[name]
    src = tmp_path / "cand.c"
    src.write_text(code + "\n")
    cfg = EvalConfig(repeats=1, warmup=0, timeout_s=20, bench_size=32, sandbox=False)
    rec = evaluate_source(KERNEL, src, tmp_path / "work", BuildConfig(), cfg)
    assert rec["status"] == status and word in rec["reason"], rec["reason"]
    assert "root:" not in json.dumps(rec)


@pytest.mark.parametrize(
    ("code", "word"),
    [
        (
            "static volatile int x;\n__attribute__((constructor)) static void early(void) "
            "{ x = 1; }\n",
            ".init_array",
        ),
        (
            "static volatile int x;\n__attribute__((destructor)) static void late(void) "
            "{ x = 2; }\n",
            ".fini_array",
        ),
        ("int helper(void) { return 1; }\n", "helper"),
    ],
)
def test_the_object_screen_alone_catches_what_runs_outside_the_call(tmp_path, code, word):
    """Defence in depth: the object screen, on an object the text screen never saw."""
    from hpcagents.judge.screen import screen_symbols

    src = tmp_path / "k.c"
    src.write_text(code + SIG + " { (void)m; }\n")
    subprocess.run(["gcc", "-O2", "-c", str(src), "-o", str(tmp_path / "k.o")], check=True)
    res = screen_symbols(tmp_path / "k.o", "kernel_dgemm")
    assert res.status == "forbidden_symbol" and word in res.reason
