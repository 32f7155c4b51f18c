/* Scripted variant "rows8_blocked": each task takes eight rows and walks the columns in
 * blocks of 2048, so the 16 KB slice of x in use is reused from L1 by all eight rows;
 * SIMD reductions per row and block; tasks in parallel. */
#define NB 2048

void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
    if (alpha == 0.0) {
        for (int i = 0; i < m; i++)
            y[i] = beta == 0.0 ? 0.0 : beta * y[i];
        return;
    }
    const int m8 = m / 8 * 8;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m8; i += 8) {
        double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j0 = 0; j0 < n; j0 += NB) {
            const int j1 = j0 + NB < n ? j0 + NB : n;
            for (int r = 0; r < 8; r++) {
                const double *restrict a = A + (long)(i + r) * lda;
                double acc = 0.0;
#pragma omp simd reduction(+ : acc)
                for (int j = j0; j < j1; j++)
                    acc += a[j] * x[j];
                s[r] += acc;
            }
        }
        for (int r = 0; r < 8; r++)
            y[i + r] = beta == 0.0 ? alpha * s[r] : alpha * s[r] + beta * y[i + r];
    }
    for (int i = m8; i < m; i++) {
        const double *restrict a = A + (long)i * lda;
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < n; j++)
            acc += a[j] * x[j];
        y[i] = beta == 0.0 ? alpha * acc : alpha * acc + beta * y[i];
    }
}
