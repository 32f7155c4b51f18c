/* Scripted variant "loop_reorder": i-k-j loop order so the innermost loop streams rows
 * of B and C with unit stride (vectorised by the compiler), rows of C in parallel. */
void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        if (beta == 0.0)
            for (int j = 0; j < n; j++) c[j] = 0.0;
        else if (beta != 1.0)
            for (int j = 0; j < n; j++) c[j] *= beta;
        if (alpha == 0.0) continue;
        for (int p = 0; p < k; p++) {
            const double a = alpha * A[(long)i * lda + p];
            const double *b = B + (long)p * ldb;
            for (int j = 0; j < n; j++) c[j] += a * b[j];
        }
    }
}
