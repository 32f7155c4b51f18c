/* omp_set_num_threads before the region: the kernel picks its own team size. */
#include <omp.h>

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    omp_set_num_threads(3);
#pragma omp parallel for schedule(dynamic, 2)
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        for (int j = 0; j < n; j++)
            c[j] = beta == 0.0 ? 0.0 : beta * c[j];
        if (alpha == 0.0)
            continue;
        for (int p = 0; p < k; p++) {
            const double a = alpha * A[(long)i * lda + p];
            for (int j = 0; j < n; j++)
                c[j] += a * B[(long)p * ldb + j];
        }
    }
}
