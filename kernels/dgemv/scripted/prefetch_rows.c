/* Scripted variant "prefetch_rows": rows in parallel, and while one row's dot product
 * runs, the start of the row four ahead is prefetched so the memory latency of a new
 * row is hidden behind the current one. */
void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double acc = 0.0;
        if (alpha != 0.0) {
            const double *a = A + (long)i * lda;
            if (i + 4 < m)
                for (int j = 0; j < n && j < 64; j += 8)
                    __builtin_prefetch(a + 4L * lda + j, 0, 0);
            for (int j = 0; j < n; j++)
                acc += a[j] * x[j];
        }
        y[i] = beta == 0.0 ? alpha * acc : alpha * acc + beta * y[i];
    }
}
