/* Scripted variant "rows4_saxpy": as transpose_saxpy, but four rows of C are updated per
 * pass over At, so each row segment of At loaded serves four rows (the part of the
 * triangle they share, then the three short tails one row at a time); the k loop is cut
 * into panels of 256 so the panel of At in use stays in L2; blocks of rows dealt
 * round-robin to the threads. */
#include <stdlib.h>

#define KC 256

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
    const int blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static, 1)
    for (int b = 0; b < blocks; b++) {
        const int i0 = 4 * b, rows = n - i0 < 4 ? n - i0 : 4;
        for (int r = 0; r < rows; r++) {
            double *ci = C + (long)(i0 + r) * ldc;
            const int len = i0 + r + 1;
            if (beta == 0.0)
                for (int j = 0; j < len; j++) ci[j] = 0.0;
            else if (beta != 1.0)
                for (int j = 0; j < len; j++) ci[j] *= beta;
        }
        if (!At)
            continue;
        for (int p0 = 0; p0 < k; p0 += KC) {
            const int p1 = p0 + KC < k ? p0 + KC : k;
            for (int p = p0; p < p1; p++) {
                const double *restrict bt = At + (long)p * n;
                if (rows == 4) {
                    const double u0 = alpha * bt[i0], u1 = alpha * bt[i0 + 1];
                    const double u2 = alpha * bt[i0 + 2], u3 = alpha * bt[i0 + 3];
                    double *restrict c0 = C + (long)i0 * ldc, *restrict c1 = c0 + ldc;
                    double *restrict c2 = c1 + ldc, *restrict c3 = c2 + ldc;
                    for (int j = 0; j <= i0; j++) {
                        const double v = bt[j];
                        c0[j] += u0 * v;
                        c1[j] += u1 * v;
                        c2[j] += u2 * v;
                        c3[j] += u3 * v;
                    }
                    c1[i0 + 1] += u1 * bt[i0 + 1];
                    c2[i0 + 1] += u2 * bt[i0 + 1];
                    c2[i0 + 2] += u2 * bt[i0 + 2];
                    c3[i0 + 1] += u3 * bt[i0 + 1];
                    c3[i0 + 2] += u3 * bt[i0 + 2];
                    c3[i0 + 3] += u3 * bt[i0 + 3];
                } else {
                    for (int r = 0; r < rows; r++) {
                        const int i = i0 + r;
                        const double u = alpha * bt[i];
                        double *restrict ci = C + (long)i * ldc;
                        for (int j = 0; j <= i; j++)
                            ci[j] += u * bt[j];
                    }
                }
            }
        }
    }
    free(At);
}
