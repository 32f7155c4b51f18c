/* Scripted variant "register_blocking": a 4 x 8 block of C stays in registers while the
 * k loop runs; edge rows and columns fall back to a scalar loop. */
static void edge(int i0, int i1, int j0, int j1, int k, double alpha, const double *A, int lda,
                 const double *B, int ldb, double *C, int ldc)
{
    for (int i = i0; i < i1; i++)
        for (int j = j0; j < j1; j++) {
            double s = 0.0;
            for (int p = 0; p < k; p++) s += A[(long)i * lda + p] * B[(long)p * ldb + j];
            C[(long)i * ldc + j] += alpha * s;
        }
}

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        if (beta == 0.0)
            for (int j = 0; j < n; j++) c[j] = 0.0;
        else if (beta != 1.0)
            for (int j = 0; j < n; j++) c[j] *= beta;
    }
    if (alpha == 0.0 || k == 0) return;
    const int m4 = m - m % 4, n8 = n - n % 8;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m4; i += 4) {
        for (int j = 0; j < n8; j += 8) {
            double acc[4][8] = {{0}};
            for (int p = 0; p < k; p++) {
                const double *b = B + (long)p * ldb + j;
                for (int r = 0; r < 4; r++) {
                    const double a = A[(long)(i + r) * lda + p];
#pragma omp simd
                    for (int q = 0; q < 8; q++) acc[r][q] += a * b[q];
                }
            }
            for (int r = 0; r < 4; r++)
                for (int q = 0; q < 8; q++) C[(long)(i + r) * ldc + j + q] += alpha * acc[r][q];
        }
        edge(i, i + 4, n8, n, k, alpha, A, lda, B, ldb, C, ldc);
    }
    edge(m4, m, 0, n, k, alpha, A, lda, B, ldb, C, ldc);
}
