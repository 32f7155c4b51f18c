/* Row blocks that overlap by one row: two threads write the same row of C. */
#include <omp.h>

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int lo = (int)((long)m * t / nt), hi = (int)((long)m * (t + 1) / nt) + 1;
        if (hi > m)
            hi = m;
        for (int i = lo; i < hi; i++)
            for (int j = 0; j < n; j++) {
                double s = 0.0;
                if (alpha != 0.0)
                    for (int p = 0; p < k; p++)
                        s += A[(long)i * lda + p] * B[(long)p * ldb + j];
                C[(long)i * ldc + j] = alpha * s + (beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j]);
            }
    }
}
