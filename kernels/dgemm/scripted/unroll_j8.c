/* Scripted variant "unroll_j8": i-k-j order with the j loop unrolled by 8 and a
 * remainder loop for the last n % 8 columns. */
void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    const int n8 = n - n % 8;
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
            for (int j = 0; j < n8; j += 8) {
                c[j] += a * b[j];         c[j + 1] += a * b[j + 1];
                c[j + 2] += a * b[j + 2]; c[j + 3] += a * b[j + 3];
                c[j + 4] += a * b[j + 4]; c[j + 5] += a * b[j + 5];
                c[j + 6] += a * b[j + 6]; c[j + 7] += a * b[j + 7];
            }
            for (int j = n8; j < n; j++) c[j] += a * b[j];
        }
    }
}
