/* Scripted variant "avx512_i4": as avx512_j8, but four bodies i per pass over j, so four
 * independent sqrt/division chains are in flight and each loaded j serves four bodies;
 * a masked step for the tail of j, leftover bodies (n not a multiple of 4) one at a time
 * with a scalar loop; blocks of bodies in parallel. Falls back to a scalar
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
/* four bodies i against eight bodies j per step: four independent sqrt/div chains in flight */
static void bodies4(int i, int n, const double *x, const double *y, const double *z,
                    const double *gm, double eps2, double *acc)
{
    const __m512d e2 = _mm512_set1_pd(eps2);
    __m512d xi[4], yi[4], zi[4], ax[4], ay[4], az[4];
    for (int r = 0; r < 4; r++) {
        xi[r] = _mm512_set1_pd(x[i + r]);
        yi[r] = _mm512_set1_pd(y[i + r]);
        zi[r] = _mm512_set1_pd(z[i + r]);
        ax[r] = ay[r] = az[r] = _mm512_setzero_pd();
    }
    for (int j = 0; j < n; j += 8) {
        const int left = n - j;
        const __mmask8 k = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1u);
        const __m512d xj = _mm512_maskz_loadu_pd(k, x + j), yj = _mm512_maskz_loadu_pd(k, y + j);
        const __m512d zj = _mm512_maskz_loadu_pd(k, z + j), g = _mm512_maskz_loadu_pd(k, gm + j);
        for (int r = 0; r < 4; r++) {
            const __m512d dx = _mm512_sub_pd(xj, xi[r]), dy = _mm512_sub_pd(yj, yi[r]);
            const __m512d dz = _mm512_sub_pd(zj, zi[r]);
            const __m512d r2 =
                _mm512_fmadd_pd(dz, dz, _mm512_fmadd_pd(dy, dy, _mm512_fmadd_pd(dx, dx, e2)));
            const __m512d s = _mm512_div_pd(g, _mm512_mul_pd(r2, _mm512_sqrt_pd(r2)));
            ax[r] = _mm512_fmadd_pd(s, dx, ax[r]);
            ay[r] = _mm512_fmadd_pd(s, dy, ay[r]);
            az[r] = _mm512_fmadd_pd(s, dz, az[r]);
        }
    }
    for (int r = 0; r < 4; r++) {
        acc[3 * (i + r)] = _mm512_reduce_add_pd(ax[r]);
        acc[3 * (i + r) + 1] = _mm512_reduce_add_pd(ay[r]);
        acc[3 * (i + r) + 2] = _mm512_reduce_add_pd(az[r]);
    }
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
    const int n4 = n / 4 * 4;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n4; i += 4)
        bodies4(i, n, x, y, z, gm, eps2, acc);
    for (int i = n4; i < n; i++)
        body_scalar(i, n, x, y, z, gm, eps2, acc);
#else
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        body_scalar(i, n, x, y, z, gm, eps2, acc);
#endif
    free(x);
}
