/* Scripted variant "avx512_gather": each row is processed eight entries at a time with an
 * AVX-512 gather of x by the column indices and an FMA into a vector sum; the row's tail
 * uses a masked load and masked gather, so any row length works; rows in parallel.
 * Falls back to a scalar loop where AVX-512 is absent. */
#include <immintrin.h>

void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    (void)n;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        const int start = row_ptr[i], end = row_ptr[i + 1];
        int p = start;
        double sum = 0.0;
#if defined(__AVX512F__) && defined(__AVX512VL__)
        __m512d acc = _mm512_setzero_pd();
        for (; p + 8 <= end; p += 8) {
            const __m256i idx = _mm256_loadu_si256((const __m256i *)(col_idx + p));
            const __m512d xv = _mm512_i32gather_pd(idx, x, 8);
            acc = _mm512_fmadd_pd(_mm512_loadu_pd(val + p), xv, acc)
        }
        if (p < end) {
            const __mmask8 k = (__mmask8)((1u << (end - p)) - 1u);
            const __m256i idx = _mm256_maskz_loadu_epi32(k, col_idx + p);
            const __m512d xv = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), k, idx, x, 8);
            acc = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(k, val + p), xv, acc);
            p = end;
        }
        sum = _mm512_reduce_add_pd(acc);
#endif
        for (; p < end; p++)
            sum += val[p] * x[col_idx[p]];
        y[i] = sum;
    }
}
