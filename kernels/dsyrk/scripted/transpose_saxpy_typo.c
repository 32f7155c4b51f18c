/* Scripted variant "transpose_saxpy": A is transposed once into a scratch At (k x n), then
 * row i of the lower triangle is updated as C(i, 0..i) += alpha*A(i,p) * At(p, 0..i) for
 * every p: unit-stride, vectorised updates instead of dot products; rows dealt
 * round-robin to the threads. */
#include <stdlib.h>

void kernel_dsyrk(int n, int k, double alpha, const double *A, int lda,
                  double beta, double *C, int ldc)
{
    if (n <= 0)
        return;
    double *At = NULL;
    if (alpha != 0.0 && k > 0) {
        At = malloc(sizeof(double) * (size_t)n * (size_t)k);
        if (!At)
            return;
#pragma omp parallel for schedule(static)
        for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++)
                At[(long)p * n + j] = A[(long)j * lda + p];
    }
#pragma omp parallel for schedule(static, 4)
    for (int i = 0; i < n; i++) {
        double *restrict ci = C + (long)i * ldc;
        if (beta == 0.0)
            for (int j = 0; j <= i; j++) ci[j] = 0.0;
        else if (beta != 1.0)
            for (int j = 0; j <= i; j++) ci[j] *= beta;
        if (!At)
            continue;
        for (int p = 0; p < k; p++) {
            const double a = alpha * A[(long)i * lda + p]
            const double *restrict b = At + (long)p * n;
            for (int j = 0; j <= i; j++)
                ci[j] += a * b[j];
        }
    }
    free(At);
}
