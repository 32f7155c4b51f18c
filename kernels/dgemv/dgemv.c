/* Baseline dgemv: the plain loop nest the agents start from.
 * y := alpha*A*x + beta*y, A is m x n row-major with leading dimension lda (see kernel.yaml). */

void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
    for (int i = 0; i < m; i++) {
        double acc = 0.0;
        if (alpha != 0.0)
            for (int j = 0; j < n; j++)
                acc += A[i * lda + j] * x[j];
        if (beta == 0.0)
            y[i] = alpha * acc;
        else
            y[i] = alpha * acc + beta * y[i];
    }
}
