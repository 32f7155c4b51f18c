/* The racy volatile-flag kernel, done right: an OpenMP barrier between the phases. */
#include <omp.h>
#include <stdlib.h>

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    if (m == 0 || n == 0)
        return;
    if (alpha == 0.0 || k == 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                C[(long)i * ldc + j] = beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j];
        return;
    }
    double *bt = malloc(sizeof(double) * (size_t)n * (size_t)k);
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int j = t; j < n; j += nt)
            for (int p = 0; p < k; p++)
                bt[(long)j * k + p] = B[(long)p * ldb + j];
#pragma omp barrier
        for (int i = t; i < m; i += nt)
            for (int j = 0; j < n; j++) {
                double s = 0.0;
                for (int p = 0; p < k; p++)
                    s += A[(long)i * lda + p] * bt[(long)j * k + p];
                C[(long)i * ldc + j] = alpha * s + (beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j]);
            }
    }
    free(bt);
}
