/* Scripted variant "avx512_rows": the x loop written with AVX-512 intrinsics, eight
 * points per step, the neighbour sums paired so the adds form a shallow tree, the row's
 * tail done with a masked load/store; rows shared among OpenMP threads. Falls back to
 * the plain loop where AVX-512 is absent. */
#include <immintrin.h>

void kernel_stencil3d(int nx, int ny, int nz, double c0, double c1,
                      const double *in, double *out)
{
    const long sy = nx + 2, sz = (long)(nx + 2) * (ny + 2);
#pragma omp parallel for collapse(2) schedule(static)
    for (int z = 1; z <= nz; z++)
        for (int y = 1; y <= ny; y++) {
            const long c = z * sz + y * sy;
            const double *p = in + c;
            double *o = out + c;
            int x = 1;
#if defined(__AVX512F__)
            const __m512d vc0 = _mm512_set1_pd(c0), vc1 = _mm512_set1_pd(c1);
            for (; x <= nx; x += 8) {
                const int left = nx - x + 1;
                const __mmask8 m = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1u);
                __m512d s = _mm512_add_pd(_mm512_maskz_loadu_pd(m, p + x - 1),
                                          _mm512_maskz_loadu_pd(m, p + x + 1));
                __m512d t = _mm512_add_pd(_mm512_maskz_loadu_pd(m, p + x - sy),
                                          _mm512_maskz_loadu_pd(m, p + x + sy));
                __m512d u = _mm512_add_pd(_mm512_maskz_loadu_pd(m, p + x - sz),
                                          _mm512_maskz_loadu_pd(m, p + x + sz));
                s = _mm512_add_pd(_mm512_add_pd(s, t), u);
                __m512d r = _mm512_fmadd_pd(vc1, s, _mm512_mul_pd(vc0, _mm512_maskz_loadu_pd(m, p + x)));
                _mm512_mask_storeu_pd(o + x, m, r);
            }
#endif
            for (; x <= nx; x++)
                o[x] = c0 * p[x] + c1 * ((p[x - 1] + p[x + 1]) + (p[x - sy] + p[x + sy])
                                         + (p[x - sz] + p[x + sz]));
        }
}
