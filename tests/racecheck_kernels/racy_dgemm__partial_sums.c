/* For large k, every thread sums its own slice of k and adds it to C without atomics. */
#include <omp.h>

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            C[(long)i * ldc + j] = beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j];
    if (alpha == 0.0 || k == 0)
        return;
    if (k < 256) {
#pragma omp parallel for
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++)
                for (int j = 0; j < n; j++)
                    C[(long)i * ldc + j] += alpha * A[(long)i * lda + p] * B[(long)p * ldb + j];
        return;
    }
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int p0 = (int)((long)k * t / nt), p1 = (int)((long)k * (t + 1) / nt);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 0.0;
                for (int p = p0; p < p1; p++)
                    s += A[(long)i * lda + p] * B[(long)p * ldb + j];
                C[(long)i * ldc + j] += alpha * s;
            }
    }
}
