/* Scripted variant "omp_rows": the rows of A (one dot product each) are shared among the
 * OpenMP threads with a static schedule; alpha == 0 and beta == 0 keep BLAS semantics. */
void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double acc = 0.0;
        if (alpha != 0.0) {
            const double *a = A + (long)i * lda;
            for (int j = 0; j < n; j++)
                acc += a[j] * x[j];
        }
        y[i] = beta == 0.0 ? alpha * acc : alpha * acc + beta * y[i];
    }
}
