/* Scripted variant "blocked_streaming": y blocks of 24 rows march through the z planes
 * (the three planes in use stay in L2, each input row read from memory once) and out is
 * written with non-temporal stores (no write-allocate traffic). Blocks in parallel. */
#include <immintrin.h>
#include <stdint.h>

#define BY 24

#if defined(__AVX512F__)
#define VW 8
#elif defined(__AVX__)
#define VW 4
#else
#define VW 1
#endif

static inline double point(const double *p, long x, long sy, long sz, double c0, double c1)
{
    return c0 * p[x] + c1 * ((p[x - 1] + p[x + 1]) + (p[x - sy] + p[x + sy])
                             + (p[x - sz] + p[x + sz]));
}

static void row(const double *p, double *o, int nx, long sy, long sz, double c0, double c1)
{
    long x = 1;
    while (x <= nx && ((uintptr_t)(o + x) & 63) != 0) {
        o[x] = point(p, x, sy, sz, c0, c1);
        x++;
    }
#if VW == 8
    const __m512d vc0 = _mm512_set1_pd(c0), vc1 = _mm512_set1_pd(c1);
    for (; x + 7 <= nx; x += 8) {
        __m512d s = _mm512_add_pd(_mm512_loadu_pd(p + x - 1), _mm512_loadu_pd(p + x + 1));
        __m512d t = _mm512_add_pd(_mm512_loadu_pd(p + x - sy), _mm512_loadu_pd(p + x + sy));
        __m512d u = _mm512_add_pd(_mm512_loadu_pd(p + x - sz), _mm512_loadu_pd(p + x + sz));
        s = _mm512_add_pd(_mm512_add_pd(s, t), u);
        _mm512_stream_pd(o + x, _mm512_fmadd_pd(vc1, s, _mm512_mul_pd(vc0, _mm512_loadu_pd(p + x))));
    }
#elif VW == 4
    const __m256d vc0 = _mm256_set1_pd(c0), vc1 = _mm256_set1_pd(c1);
    for (; x + 3 <= nx; x += 4) {
        __m256d s = _mm256_add_pd(_mm256_loadu_pd(p + x - 1), _mm256_loadu_pd(p + x + 1));
        __m256d t = _mm256_add_pd(_mm256_loadu_pd(p + x - sy), _mm256_loadu_pd(p + x + sy));
        __m256d u = _mm256_add_pd(_mm256_loadu_pd(p + x - sz), _mm256_loadu_pd(p + x + sz));
        s = _mm256_add_pd(_mm256_add_pd(s, t), u);
        __m256d r = _mm256_add_pd(_mm256_mul_pd(vc0, _mm256_loadu_pd(p + x)), _mm256_mul_pd(vc1, s));
        _mm256_stream_pd(o + x, r);
    }
#endif
    for (; x <= nx; x++)
        o[x] = point(p, x, sy, sz, c0, c1);
}

void kernel_stencil3d(int nx, int ny, int nz, double c0, double c1,
                      const double *in, double *out)
{
    const long sy = nx + 2, sz = (long)(nx + 2) * (ny + 2);
    const int nblocks = (ny + BY - 1) / BY;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int b = 0; b < nblocks; b++) {
            const int y0 = 1 + b * BY;
            const int y1 = y0 + BY - 1 < ny ? y0 + BY - 1 : ny;
            for (int z = 1; z <= nz; z++)
                for (int y = y0; y <= y1; y++) {
                    const long c = z * sz + y * sy;
                    row(in + c, out + c, nx, sy, sz, c0, c1);
                }
        }
        _mm_sfence(); /* each thread drains its own streaming stores */
    }
}
