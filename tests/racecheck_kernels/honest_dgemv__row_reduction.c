/* A reduction clause per row (many small parallel regions: slow, but race-free). */
void kernel_dgemv(int m, int n, double alpha, const double *A, int lda, const double *x,
                  double beta, double *y)
{
    for (int i = 0; i < m; i++) {
        double s = 0.0;
        if (alpha != 0.0) {
#pragma omp parallel for reduction(+ : s) schedule(static)
            for (int j = 0; j < n; j++)
                s += A[(long)i * lda + j] * x[j];
        }
        y[i] = alpha * s + (beta == 0.0 ? 0.0 : beta * y[i]);
    }
}
