void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            if (alpha != 0.0)
                for (int p = 0; p < k; p++)
                    s += A[(long)i * lda + p] * B[(long)p * ldb + j];
            C[(long)i * ldc + j] = alpha * s + (beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j]);
        }
}
