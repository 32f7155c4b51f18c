/* Scripted variant "rows4": four rows of A are reduced together, so every element of x
 * loaded is used four times, with SIMD reductions over the columns; blocks of rows in
 * parallel, leftover rows one at a time. */
static void one_row(int n, double alpha, const double *restrict a, const double *restrict x,
                    double beta, double *y)
{
    double acc = 0.0;
    if (alpha != 0.0) {
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < n; j++)
            acc += a[j] * x[j];
    }
    *y = beta == 0.0 ? alpha * acc : alpha * acc + beta * *y;
}

void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
    const int m4 = alpha != 0.0 ? m / 4 * 4 : 0;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m4; i += 4) {
        const double *restrict a0 = A + (long)i * lda;
        const double *restrict a1 = a0 + lda;
        const double *restrict a2 = a1 + lda;
        const double *restrict a3 = a2 + lda;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int j = 0; j < n; j++) {
            const double xj = x[j];
            s0 += a0[j] * xj;
            s1 += a1[j] * xj;
            s2 += a2[j] * xj;
            s3 += a3[j] * xj;
        }
        const double s[4] = {s0, s1, s2, s3};
        for (int r = 0; r < 4; r++)
            y[i + r] = beta == 0.0 ? alpha * s[r] : alpha * s[r] + beta * y[i + r];
    }
#pragma omp parallel for schedule(static)
    for (int i = m4; i < m; i++)
        one_row(n, alpha, A + (long)i * lda, x, beta, y + i);
}
