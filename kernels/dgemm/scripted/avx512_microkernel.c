/* Scripted variant "avx512_microkernel": GotoBLAS-style blocking. B is packed into
 * KC x 16 strips, A into 6 x KC strips; a 6 x 16 AVX-512 FMA micro-kernel keeps 12 zmm
 * accumulators in registers; OpenMP over MC-row blocks of C. Edges go through a small
 * buffer, so any m, n, k (and leading dimension) is handled. */
#include <immintrin.h>
#include <stdlib.h>

#define MR 6
#define NR 16
#define MC 96
#define KC 256
#define NC 1024

static inline int min_i(int a, int b) { return a < b ? a : b; }

static void pack_b(int kc, int nc, const double *B, int ldb, double *Bp)
{
    for (int js = 0; js < nc; js += NR) {
        const int nr = min_i(NR, nc - js);
        double *dst = Bp + (long)js * kc;
        for (int p = 0; p < kc; p++) {
            const double *src = B + (long)p * ldb + js;
            int q = 0;
            for (; q < nr; q++) dst[p * NR + q] = src[q];
            for (; q < NR; q++) dst[p * NR + q] = 0.0;
        }
    }
}

static void pack_a(int mc, int kc, const double *A, int lda, double *Ap)
{
    for (int is = 0; is < mc; is += MR) {
        const int mr = min_i(MR, mc - is);
        double *dst = Ap + (long)is * kc;
        for (int p = 0; p < kc; p++) {
            int r = 0;
            for (; r < mr; r++) dst[p * MR + r] = A[(long)(is + r) * lda + p];
            for (; r < MR; r++) dst[p * MR + r] = 0.0;
        }
    }
}

static void micro(int kc, const double *Ap, const double *Bp, double alpha, double *C, int ldc,
                  int mr, int nr)
{
    __m512d c[MR][2];
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm512_setzero_pd();
    for (int p = 0; p < kc; p++) {
        const __m512d b0 = _mm512_load_pd(Bp + p * NR);
        const __m512d b1 = _mm512_load_pd(Bp + p * NR + 8);
        for (int r = 0; r < MR; r++) {
            const __m512d a = _mm512_set1_pd(Ap[p * MR + r]);
            c[r][0] = _mm512_fmadd_pd(a, b0, c[r][0]);
            c[r][1] = _mm512_fmadd_pd(a, b1, c[r][1]);
        }
    }
    const __m512d va = _mm512_set1_pd(alpha);
    if (mr == MR && nr == NR) {
        for (int r = 0; r < MR; r++) {
            double *cr = C + (long)r * ldc;
            _mm512_storeu_pd(cr, _mm512_fmadd_pd(va, c[r][0], _mm512_loadu_pd(cr)));
            _mm512_storeu_pd(cr + 8, _mm512_fmadd_pd(va, c[r][1], _mm512_loadu_pd(cr + 8)));
        }
    } else {
        double tmp[MR * NR] __attribute__((aligned(64)));
        for (int r = 0; r < MR; r++) {
            _mm512_store_pd(tmp + r * NR, c[r][0]);
            _mm512_store_pd(tmp + r * NR + 8, c[r][1]);
        }
        for (int r = 0; r < mr; r++)
            for (int q = 0; q < nr; q++) C[(long)r * ldc + q] += alpha * tmp[r * NR + q];
    }
}

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
    double *Bp = aligned_alloc(64, sizeof(double) * KC * NC);
    if (!Bp) return;
    for (int jc = 0; jc < n; jc += NC) {
        const int nc = min_i(NC, n - jc);
        for (int pc = 0; pc < k; pc += KC) {
            const int kc = min_i(KC, k - pc);
            pack_b(kc, nc, B + (long)pc * ldb + jc, ldb, Bp);
#pragma omp parallel
            {
                double *Ap = aligned_alloc(64, sizeof(double) * MC * KC);
#pragma omp for schedule(dynamic, 1)
                for (int ic = 0; ic < m; ic += MC) {
                    const int mc = min_i(MC, m - ic);
                    pack_a(mc, kc, A + (long)ic * lda + pc, lda, Ap);
                    for (int jr = 0; jr < nc; jr += NR)
                        for (int ir = 0; ir < mc; ir += MR)
                            micro(kc, Ap + (long)ir * kc, Bp + (long)jr * kc, alpha,
                                  C + (long)(ic + ir) * ldc + jc + jr, ldc, min_i(MR, mc - ir),
                                  min_i(NR, nc - jr));
                }
                free(Ap);
            }
        }
    }
    free(Bp);
}
