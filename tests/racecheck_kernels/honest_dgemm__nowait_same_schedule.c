/* nowait between two loops with the same static schedule over the same rows: OpenMP
 * gives each thread the same rows in both, so no barrier is needed. */
void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                C[(long)i * ldc + j] = beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j];
#pragma omp for schedule(static) nowait
        for (int i = 0; i < m; i++) {
            if (alpha == 0.0)
                continue;
            for (int p = 0; p < k; p++) {
                const double a = alpha * A[(long)i * lda + p];
#pragma omp simd
                for (int j = 0; j < n; j++)
                    C[(long)i * ldc + j] += a * B[(long)p * ldb + j];
            }
        }
    }
}
