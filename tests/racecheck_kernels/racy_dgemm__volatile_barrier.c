/* Transpose B in phase 1, then a hand-made barrier that spins on plain volatile flags,
 * then phase 2 reads every thread's part of the transpose. */
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
    volatile int *ready = calloc((size_t)omp_get_max_threads() + 1, sizeof(int));
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int j = t; j < n; j += nt)
            for (int p = 0; p < k; p++)
                bt[(long)j * k + p] = B[(long)p * ldb + j];
        ready[t] = 1;
        for (int u = 0; u < nt; u++)
            while (!ready[u])
                ;
        for (int i = t; i < m; i += nt)
            for (int j = 0; j < n; j++) {
                double s = 0.0;
                for (int p = 0; p < k; p++)
                    s += A[(long)i * lda + p] * bt[(long)j * k + p];
                C[(long)i * ldc + j] = alpha * s + (beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j]);
            }
    }
    free((void *)ready);
    free(bt);
}
