/* Scripted variant "omp_simd": i-k-j order, 4 rows of A per step, explicit
 * `#pragma omp simd` on the unit-stride j loop, OpenMP over row blocks. */
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
        int p = 0;
        for (; p + 4 <= k; p += 4) {
            const double *a = A + (long)i * lda + p;
            const double a0 = alpha * a[0], a1 = alpha * a[1], a2 = alpha * a[2], a3 = alpha * a[3];
            const double *restrict b0 = B + (long)p * ldb, *restrict b1 = b0 + ldb;
            const double *restrict b2 = b1 + ldb, *restrict b3 = b2 + ldb;
#pragma omp simd
            for (int j = 0; j < n; j++) c[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
        }
        for (; p < k; p++) {
            const double a = alpha * A[(long)i * lda + p];
            const double *restrict b = B + (long)p * ldb;
#pragma omp simd
            for (int j = 0; j < n; j++) c[j] += a * b[j];
        }
    }
}
