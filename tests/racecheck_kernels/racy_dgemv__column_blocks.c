/* Columns split over threads; each adds its partial dot products into y unsynchronised. */
#include <omp.h>

void kernel_dgemv(int m, int n, double alpha, const double *A, int lda, const double *x,
                  double beta, double *y)
{
    for (int i = 0; i < m; i++)
        y[i] = beta == 0.0 ? 0.0 : beta * y[i];
    if (alpha == 0.0 || n == 0)
        return;
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int j0 = (int)((long)n * t / nt), j1 = (int)((long)n * (t + 1) / nt);
        for (int i = 0; i < m; i++) {
            double s = 0.0;
            for (int j = j0; j < j1; j++)
                s += A[(long)i * lda + j] * x[j];
            y[i] += alpha * s;
        }
    }
}
