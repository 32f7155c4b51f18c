/* Scripted variant "transpose_b": B is transposed once into a contiguous buffer so every
 * element of C is a unit-stride dot product of a row of A and a row of B^T. */
#include <stdlib.h>

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    double *Bt = (alpha != 0.0 && k > 0 && n > 0) ? malloc(sizeof(double) * (size_t)n * k) : NULL;
    if (Bt)
        for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++) Bt[(long)j * k + p] = B[(long)p * ldb + j];
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        const double *a = A + (long)i * lda;
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            if (Bt) {
                const double *bt = Bt + (long)j * k;
#pragma omp simd reduction(+ : s)
                for (int p = 0; p < k; p++) s += a[p] * bt[p];
            }
            c[j] = (beta == 0.0 ? 0.0 : beta * c[j]) + alpha * s;
        }
    }
    free(Bt);
}
