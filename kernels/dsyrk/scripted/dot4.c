/* Scripted variant "dot4": four entries C(i, j..j+3) are computed together, so each
 * element of row i of A loaded serves four dot products (SIMD reductions over p); the
 * last entries of a row (i+1 not a multiple of 4) are done one at a time; rows dealt
 * round-robin to the threads. */
void kernel_dsyrk(int n, int k, double alpha, const double *A, int lda,
                  double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static, 4)
    for (int i = 0; i < n; i++) {
        const double *restrict ai = A + (long)i * lda;
        double *ci = C + (long)i * ldc;
        int j = 0;
        if (alpha != 0.0) {
            for (; j + 3 <= i; j += 4) {
                const double *restrict a0 = A + (long)j * lda;
                const double *restrict a1 = a0 + lda, *restrict a2 = a1 + lda;
                const double *restrict a3 = a2 + lda;
                double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
                for (int p = 0; p < k; p++) {
                    const double a = ai[p];
                    s0 += a * a0[p];
                    s1 += a * a1[p];
                    s2 += a * a2[p];
                    s3 += a * a3[p];
                }
                const double s[4] = {s0, s1, s2, s3};
                for (int q = 0; q < 4; q++)
                    ci[j + q] = beta == 0.0 ? alpha * s[q] : alpha * s[q] + beta * ci[j + q];
            }
        }
        for (; j <= i; j++) {
            double acc = 0.0;
            if (alpha != 0.0) {
                const double *restrict aj = A + (long)j * lda;
#pragma omp simd reduction(+ : acc)
                for (int p = 0; p < k; p++)
                    acc += ai[p] * aj[p];
            }
            ci[j] = beta == 0.0 ? alpha * acc : alpha * acc + beta * ci[j];
        }
    }
}
