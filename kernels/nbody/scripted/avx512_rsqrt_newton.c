/* Scripted variant "avx512_rsqrt_newton": as avx512_j8 (structure of arrays, two bodies i
 * against eight bodies j per AVX-512 step), but 1/r^3 comes from the hardware estimate of
 * 1/sqrt(r^2) refined by two Newton steps to nearly full double precision, replacing
 * the slow vector sqrt and division; a masked step for the tail
 * of j and a scalar loop for an odd last i; bodies in parallel. Falls back to a scalar
 * loop where AVX-512 is absent. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

static void body_scalar(int i, int n, const double *x, const double *y, const double *z,
                        const double *gm, double eps2, double *acc)
{
    double ax = 0.0, ay = 0.0, az = 0.0;
    for (int j = 0; j < n; j++) {
        const double dx = x[j] - x[i], dy = y[j] - y[i], dz = z[j] - z[i];
        const double r2 = dx * dx + dy * dy + dz * dz + eps2;
        const double s = gm[j] / (r2 * sqrt(r2));
        ax += s * dx;
        ay += s * dy;
        az += s * dz;
    }
    acc[3 * i] = ax;
    acc[3 * i + 1] = ay;
    acc[3 * i + 2] = az;
}

#if defined(__AVX512F__)
/* 1/r^3 from the 14-bit hardware estimate of 1/sqrt(r2) and two Newton steps
 * (14 -> 28 -> 56 bits): a few ulps from the exact value, no division, no sqrt. */
static inline __m512d inv_r3(__m512d r2)
{
    const __m512d half = _mm512_set1_pd(0.5), three_halves = _mm512_set1_pd(1.5);
    const __m512d h = _mm512_mul_pd(half, r2);
    __m512d y = _mm512_rsqrt14_pd(r2);
    y = _mm512_mul_pd(y, _mm512_fnmadd_pd(h, _mm512_mul_pd(y, y), three_halves));
    y = _mm512_mul_pd(y, _mm512_fnmadd_pd(h, _mm512_mul_pd(y, y), three_halves));
    return _mm512_mul_pd(y, _mm512_mul_pd(y, y));
}

static void bodies2(int i, int n, const double *x, const double *y, const double *z,
                    const double *gm, double eps2, double *acc)
{
    const __m512d e2 = _mm512_set1_pd(eps2);
    const __m512d xa = _mm512_set1_pd(x[i]), ya = _mm512_set1_pd(y[i]), za = _mm512_set1_pd(z[i]);
    const __m512d xb = _mm512_set1_pd(x[i + 1]), yb = _mm512_set1_pd(y[i + 1]);
    const __m512d zb = _mm512_set1_pd(z[i + 1]);
    __m512d axa = _mm512_setzero_pd(), aya = _mm512_setzero_pd(), aza = _mm512_setzero_pd();
    __m512d axb = _mm512_setzero_pd(), ayb = _mm512_setzero_pd(), azb = _mm512_setzero_pd();
    for (int j = 0; j < n; j += 8) {
        const int left = n - j;
        const __mmask8 k = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1u);
        const __m512d xj = _mm512_maskz_loadu_pd(k, x + j), yj = _mm512_maskz_loadu_pd(k, y + j);
        const __m512d zj = _mm512_maskz_loadu_pd(k, z + j), g = _mm512_maskz_loadu_pd(k, gm + j);
        /* body a */
        __m512d dx = _mm512_sub_pd(xj, xa), dy = _mm512_sub_pd(yj, ya), dz = _mm512_sub_pd(zj, za);
        __m512d r2 = _mm512_fmadd_pd(dz, dz, _mm512_fmadd_pd(dy, dy, _mm512_fmadd_pd(dx, dx, e2)));
        __m512d s = _mm512_mul_pd(g, inv_r3(r2));
        axa = _mm512_fmadd_pd(s, dx, axa);
        aya = _mm512_fmadd_pd(s, dy, aya);
        aza = _mm512_fmadd_pd(s, dz, aza);
        /* body b */
        dx = _mm512_sub_pd(xj, xb), dy = _mm512_sub_pd(yj, yb), dz = _mm512_sub_pd(zj, zb);
        r2 = _mm512_fmadd_pd(dz, dz, _mm512_fmadd_pd(dy, dy, _mm512_fmadd_pd(dx, dx, e2)));
        s = _mm512_mul_pd(g, inv_r3(r2));
        axb = _mm512_fmadd_pd(s, dx, axb);
        ayb = _mm512_fmadd_pd(s, dy, ayb);
        azb = _mm512_fmadd_pd(s, dz, azb);
    }
    acc[3 * i] = _mm512_reduce_add_pd(axa);
    acc[3 * i + 1] = _mm512_reduce_add_pd(aya);
    acc[3 * i + 2] = _mm512_reduce_add_pd(aza);
    acc[3 * i + 3] = _mm512_reduce_add_pd(axb);
    acc[3 * i + 4] = _mm512_reduce_add_pd(ayb);
    acc[3 * i + 5] = _mm512_reduce_add_pd(azb);
}
#endif

void compute_accelerations(int n, const double *pos, const double *mass,
                           double G, double eps, double *acc)
{
    if (n <= 0)
        return;
    const size_t bytes = ((size_t)n * sizeof(double) + 63) / 64 * 64;
    double *x = aligned_alloc(64, 4 * bytes);
    if (!x)
        return;
    double *y = x + bytes / sizeof(double), *z = y + bytes / sizeof(double);
    double *gm = z + bytes / sizeof(double);
    for (int j = 0; j < n; j++) {
        x[j] = pos[3 * j];
        y[j] = pos[3 * j + 1];
        z[j] = pos[3 * j + 2];
        gm[j] = G * mass[j];
    }
    const double eps2 = eps * eps;
#if defined(__AVX512F__)
    const int n2 = n / 2 * 2;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n2; i += 2)
        bodies2(i, n, x, y, z, gm, eps2, acc);
    if (n2 < n)
        body_scalar(n - 1, n, x, y, z, gm, eps2, acc);
#else
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        body_scalar(i, n, x, y, z, gm, eps2, acc);
#endif
    free(x);
}
