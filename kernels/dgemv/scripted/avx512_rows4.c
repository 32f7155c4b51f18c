/* Scripted variant "avx512_rows4": an AVX-512 kernel over four rows at a time, eight
 * columns per FMA with two accumulators per row (16 columns per step), a masked tail
 * for any n, and one horizontal sum per row at the end; blocks of rows in parallel.
 * Falls back to SIMD reductions where AVX-512 is absent. */
#include <immintrin.h>

static inline double finish(double s, double alpha, double beta, double yi)
{
    return beta == 0.0 ? alpha * s : alpha * s + beta * yi;
}

#if defined(__AVX512F__)
static void rows4(int n, const double *a0, long lda, const double *x, double *s)
{
    const double *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
    __m512d c0 = _mm512_setzero_pd(), c1 = _mm512_setzero_pd();
    __m512d c2 = _mm512_setzero_pd(), c3 = _mm512_setzero_pd();
    __m512d d0 = _mm512_setzero_pd(), d1 = _mm512_setzero_pd();
    __m512d d2 = _mm512_setzero_pd(), d3 = _mm512_setzero_pd();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m512d xa = _mm512_loadu_pd(x + j), xb = _mm512_loadu_pd(x + j + 8);
        c0 = _mm512_fmadd_pd(_mm512_loadu_pd(a0 + j), xa, c0);
        c1 = _mm512_fmadd_pd(_mm512_loadu_pd(a1 + j), xa, c1);
        c2 = _mm512_fmadd_pd(_mm512_loadu_pd(a2 + j), xa, c2);
        c3 = _mm512_fmadd_pd(_mm512_loadu_pd(a3 + j), xa, c3);
        d0 = _mm512_fmadd_pd(_mm512_loadu_pd(a0 + j + 8), xb, d0);
        d1 = _mm512_fmadd_pd(_mm512_loadu_pd(a1 + j + 8), xb, d1);
        d2 = _mm512_fmadd_pd(_mm512_loadu_pd(a2 + j + 8), xb, d2);
        d3 = _mm512_fmadd_pd(_mm512_loadu_pd(a3 + j + 8), xb, d3);
    }
    for (; j < n; j += 8) {
        const int left = n - j;
        const __mmask8 k = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1u);
        const __m512d xa = _mm512_maskz_loadu_pd(k, x + j);
        c0 = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(k, a0 + j), xa, c0);
        c1 = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(k, a1 + j), xa, c1);
        c2 = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(k, a2 + j), xa, c2);
        c3 = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(k, a3 + j), xa, c3);
    }
    s[0] = _mm512_reduce_add_pd(_mm512_add_pd(c0, d0));
    s[1] = _mm512_reduce_add_pd(_mm512_add_pd(c1, d1));
    s[2] = _mm512_reduce_add_pd(_mm512_add_pd(c2, d2));
    s[3] = _mm512_reduce_add_pd(_mm512_add_pd(c3, d3));
}
#else
static void rows4(int n, const double *a0, long lda, const double *x, double *s)
{
    for (int r = 0; r < 4; r++) {
        const double *a = a0 + r * lda;
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < n; j++)
            acc += a[j] * x[j];
        s[r] = acc;
    }
}
#endif

void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
    if (alpha == 0.0) {
        for (int i = 0; i < m; i++)
            y[i] = beta == 0.0 ? 0.0 : beta * y[i];
        return;
    }
    const int blocks = m / 4;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < blocks; b++) {
        double s[4];
        rows4(n, A + (long)4 * b * lda, lda, x, s);
        for (int r = 0; r < 4; r++)
            y[4 * b + r] = finish(s[r], alpha, beta, y[4 * b + r]);
    }
    for (int i = 4 * blocks; i < m; i++) {
        const double *a = A + (long)i * lda;
        double acc = 0.0;
        for (int j = 0; j < n; j++)
            acc += a[j] * x[j];
        y[i] = finish(acc, alpha, beta, y[i]);
    }
}
