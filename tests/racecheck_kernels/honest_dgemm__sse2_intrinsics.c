/* SSE2 intrinsics (every x86-64 CPU has them), rows in parallel. */
#include <immintrin.h>

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        for (int j = 0; j < n; j++)
            c[j] = beta == 0.0 ? 0.0 : beta * c[j];
        if (alpha == 0.0)
            continue;
        for (int p = 0; p < k; p++) {
            const double a = alpha * A[(long)i * lda + p];
            const __m128d va = _mm_set1_pd(a);
            const double *b = B + (long)p * ldb;
            int j = 0;
            for (; j + 2 <= n; j += 2)
                _mm_storeu_pd(c + j, _mm_add_pd(_mm_loadu_pd(c + j), _mm_mul_pd(va, _mm_loadu_pd(b + j))));
            for (; j < n; j++)
                c[j] += a * b[j];
        }
    }
}
