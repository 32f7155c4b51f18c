/* Scripted variant "larger_panels": the packed-B kernel with deeper (384) and narrower (128) panels; B is packed per (KB x NB) panel into a contiguous,
 * 64-byte aligned buffer; a 4 x 16 register block of C is updated from it; row tiles of
 * C run in parallel (each thread reads the shared packed panel). */
#include <stdlib.h>
#include <string.h>

#define KB 384
#define NB 128

static inline int min_i(int a, int b) { return a < b ? a : b; }

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        if (beta == 0.0)
            for (int j = 0; j < n; j++) c[j] = 0.0;
        else if (beta != 1.0)
            for (int j = 0; j < n; j++) c[j] *= beta;
    }
    if (alpha == 0.0 || k == 0 || m == 0 || n == 0) return;
    double *Bp = aligned_alloc(64, sizeof(double) * KB * NB);
    if (!Bp) return;
    for (int j0 = 0; j0 < n; j0 += NB) {
        const int nb = min_i(NB, n - j0);
        for (int p0 = 0; p0 < k; p0 += KB) {
            const int kb = min_i(KB, k - p0);
            for (int p = 0; p < kb; p++)
                memcpy(Bp + (long)p * NB, B + (long)(p0 + p) * ldb + j0, sizeof(double) * nb);
            const int m4 = m - m % 4, n16 = nb - nb % 16;
#pragma omp parallel for schedule(static)
            for (int i = 0; i < m4; i += 4) {
                for (int j = 0; j < n16; j += 16) {
                    double acc[4][16] = {{0}};
                    for (int p = 0; p < kb; p++) {
                        const double *restrict b = Bp + (long)p * NB + j;
                        for (int r = 0; r < 4; r++) {
                            const double a = A[(long)(i + r) * lda + p0 + p];
#pragma omp simd aligned(b : 64)
                            for (int q = 0; q < 16; q++) acc[r][q] += a * b[q];
                        }
                    }
                    for (int r = 0; r < 4; r++) {
                        double *c = C + (long)(i + r) * ldc + j0 + j;
                        for (int q = 0; q < 16; q++) c[q] += alpha * acc[r][q];
                    }
                }
                for (int r = 0; r < 4; r++)
                    for (int j = n16; j < nb; j++) {
                        double s = 0.0;
                        for (int p = 0; p < kb; p++) s += A[(long)(i + r) * lda + p0 + p] * Bp[(long)p * NB + j];
                        C[(long)(i + r) * ldc + j0 + j] += alpha * s;
                    }
            }
            for (int i = m4; i < m; i++)
                for (int j = 0; j < nb; j++) {
                    double s = 0.0;
                    for (int p = 0; p < kb; p++) s += A[(long)i * lda + p0 + p] * Bp[(long)p * NB + j];
                    C[(long)i * ldc + j0 + j] += alpha * s;
                }
        }
    }
    free(Bp);
}
