/* Scripted variant "dot_block4x4": the lower triangle is computed in 4 x 4 blocks of dot
 * products held in 16 SIMD partial sums, so every vector of a row of A loaded serves four
 * dot products; on a diagonal block only the entries with j <= i are stored; rows of a
 * last partial block are done one entry at a time; row blocks dealt round-robin to the
 * threads. */
static inline double update(double s, double alpha, double beta, double c)
{
    return beta == 0.0 ? alpha * s : alpha * s + beta * c;
}

static double dot(int k, const double *restrict a, const double *restrict b)
{
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int p = 0; p < k; p++)
        acc += a[p] * b[p];
    return acc;
}

void kernel_dsyrk(int n, int k, double alpha, const double *A, int lda,
                  double beta, double *C, int ldc)
{
    const int nb = n / 4;
#pragma omp parallel for schedule(dynamic, 1)
    for (int ib = 0; ib < nb; ib++) {
        const int i0 = 4 * ib;
        const double *restrict x0 = A + (long)i0 * lda, *restrict x1 = x0 + lda;
        const double *restrict x2 = x1 + lda, *restrict x3 = x2 + lda;
        for (int j0 = 0; j0 <= i0; j0 += 4) {
            double s[16] = {0};
            if (alpha != 0.0) {
                const double *restrict y0 = A + (long)j0 * lda, *restrict y1 = y0 + lda;
                const double *restrict y2 = y1 + lda, *restrict y3 = y2 + lda;
                double s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
                double s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)
                for (int p = 0; p < k; p++) {
                    const double a0 = x0[p], a1 = x1[p], a2 = x2[p], a3 = x3[p];
                    const double b0 = y0[p], b1 = y1[p], b2 = y2[p], b3 = y3[p];
                    s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3;
                    s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3;
                    s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2; s23 += a2 * b3;
                    s30 += a3 * b0; s31 += a3 * b1; s32 += a3 * b2; s33 += a3 * b3;
                }
                const double t[16] = {s00, s01, s02, s03, s10, s11, s12, s13,
                                      s20, s21, s22, s23, s30, s31, s32, s33};
                for (int q = 0; q < 16; q++) s[q] = t[q];
            }
            for (int r = 0; r < 4; r++) {
                double *ci = C + (long)(i0 + r) * ldc;
                for (int q = 0; q < 4; q++)
                    if (j0 + q <= i0 + r)
                        ci[j0 + q] = update(s[4 * r + q], alpha, beta, ci[j0 + q]);
            }
        }
    }
    /* the last n % 4 rows, one entry at a time */
#pragma omp parallel for schedule(static)
    for (int i = 4 * nb; i < n; i++) {
        double *ci = C + (long)i * ldc;
        for (int j = 0; j <= i; j++) {
            const double s = alpha != 0.0 ? dot(k, A + (long)i * lda, A + (long)j * lda) : 0.0;
            ci[j] = update(s, alpha, beta, ci[j]);
        }
    }
}
