/* One static scratch row shared by every thread (meant to be per thread). */
#include <string.h>

static double row[4096];

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++)
            row[j] = 0.0;
        if (alpha != 0.0)
            for (int p = 0; p < k; p++)
                for (int j = 0; j < n; j++)
                    row[j] += A[(long)i * lda + p] * B[(long)p * ldb + j];
        for (int j = 0; j < n; j++)
            C[(long)i * ldc + j] = alpha * row[j] + (beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j]);
    }
}
