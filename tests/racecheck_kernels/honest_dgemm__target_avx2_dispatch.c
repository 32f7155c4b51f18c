/* A target("avx2,fma") row kernel chosen at run time, a plain one otherwise. */
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static void row_avx2(int n, int k, double alpha,
                                                         const double *a, const double *B,
                                                         int ldb, double *c)
{
    for (int p = 0; p < k; p++) {
        const __m256d va = _mm256_set1_pd(alpha * a[p]);
        const double *b = B + (long)p * ldb;
        int j = 0;
        for (; j + 4 <= n; j += 4)
            _mm256_storeu_pd(c + j, _mm256_fmadd_pd(va, _mm256_loadu_pd(b + j), _mm256_loadu_pd(c + j)));
        for (; j < n; j++)
            c[j] += alpha * a[p] * b[j];
    }
}

static void row_plain(int n, int k, double alpha, const double *a, const double *B, int ldb,
                      double *c)
{
    for (int p = 0; p < k; p++)
        for (int j = 0; j < n; j++)
            c[j] += alpha * a[p] * B[(long)p * ldb + j];
}

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        for (int j = 0; j < n; j++)
            c[j] = beta == 0.0 ? 0.0 : beta * c[j];
        if (alpha == 0.0)
            continue;
        if (avx2)
            row_avx2(n, k, alpha, A + (long)i * lda, B, ldb, c);
        else
            row_plain(n, k, alpha, A + (long)i * lda, B, ldb, c);
    }
}
