/* A static workspace with one row per thread (the racy shared row, done right). */
#include <omp.h>
#include <stdlib.h>

#define MAXT 64
#define ROW 2048
static double work[MAXT][ROW];

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    int nt = omp_get_max_threads();
    if (nt > MAXT)
        nt = MAXT;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        double *row = n <= ROW ? work[t] : malloc(sizeof(double) * (size_t)n);
#pragma omp for schedule(static)
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++)
                row[j] = 0.0;
            if (alpha != 0.0)
                for (int p = 0; p < k; p++)
                    for (int j = 0; j < n; j++)
                        row[j] += A[(long)i * lda + p] * B[(long)p * ldb + j];
            for (int j = 0; j < n; j++)
                C[(long)i * ldc + j] = alpha * row[j] + (beta == 0.0 ? 0.0 : beta * C[(long)i * ldc + j]);
        }
        if (n > ROW)
            free(row);
    }
}
