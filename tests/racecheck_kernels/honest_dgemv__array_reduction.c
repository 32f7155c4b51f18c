/* The racy column blocks, done right: an array-section reduction over y's partial sums. */
#include <stdlib.h>

void kernel_dgemv(int m, int n, double alpha, const double *A, int lda, const double *x,
                  double beta, double *y)
{
    if (m == 0)
        return;
    double *acc = calloc((size_t)m, sizeof(double));
    if (alpha != 0.0) {
#pragma omp parallel for reduction(+ : acc[:m]) schedule(static)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
                acc[i] += A[(long)i * lda + j] * x[j];
    }
    for (int i = 0; i < m; i++)
        y[i] = alpha * acc[i] + (beta == 0.0 ? 0.0 : beta * y[i]);
    free(acc);
}
