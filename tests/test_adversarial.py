"""Adversarial kernels: each tries to pass without doing the work, or to do harm, and
each is rejected with a specific, named reason. Honest kernels are in test_scripted.py
(every scripted variant and the baseline pass: 0 false rejections)."""

from __future__ import annotations

import pytest
from hpcagents.artifacts import validate
from hpcagents.evaluate import BuildConfig, EvalConfig, evaluate_source
from hpcagents.kernelspec import load_kernel

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
        "timed run",
    ),
    "modifies_its_inputs": (
        honest() + SIG + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);\n"
        "  if (m > 0 && k > 0) ((double *)A)[0] = 0.0; }",
        "wrong_answer",
        "modified its input",
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
        "wrong_answer",
        "timed run",
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
        "forbidden_symbol",
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
        "forbidden_code",
        "constructor",
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
    assert rec["status"] == status, f"{name}: {rec['status']}: {rec['reason']}"
    assert reason in rec["reason"], f"{name}: {rec['reason']}"


def test_the_suite_is_large_and_every_reason_is_specific():
    assert len(ATTACKS) >= 12
    assert len({(s, r) for _, s, r in ATTACKS.values()}) >= 12


def test_honest_control_passes_the_same_configuration(tmp_path):
    src = tmp_path / "cand.c"
    src.write_text(honest() + SIG + " { honest(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); }\n")
    rec = evaluate_source(KERNEL, src, tmp_path / "work", BuildConfig(), CFG)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["provenance"]["sandbox"]["kind"] in ("bubblewrap", "rlimits")
