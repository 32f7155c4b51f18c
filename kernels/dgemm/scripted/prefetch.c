/* Scripted variant "prefetch": i-k-j order with software prefetch of the next row of B. */
void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double *restrict c = C + (long)i * ldc;
        if (beta == 0.0)
            for (int j = 0; j < n; j++) c[j] = 0.0;
        else if (beta != 1.0)
            for (int j = 0; j < n; j++) c[j] *= beta;
        if (alpha == 0.0) continue;
        for (int p = 0; p < k; p++) {
            const double a = alpha * A[(long)i * lda + p];
            const double *restrict b = B + (long)p * ldb;
            if (p + 1 < k) __builtin_prefetch(B + (long)(p + 1) * ldb, 0, 1);
#pragma omp simd
            for (int j = 0; j < n; j++) c[j] += a * b[j];
        }
    }
}
