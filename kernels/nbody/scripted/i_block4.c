/* Scripted variant "i_block4": structure-of-arrays copy as in soa_simd, and four bodies i
 * per pass over j, so each x[j], y[j], z[j], G*m[j] loaded serves four interactions;
 * the j loop is vectorised with '#pragma omp simd'; leftover bodies (n not a multiple of
 * 4) are done one at a time; blocks of bodies in parallel. */
#include <math.h>
#include <stdlib.h>

static void one_body(int i, int n, const double *x, const double *y, const double *z,
                     const double *gm, double eps2, double *acc)
{
    const double xi = x[i], yi = y[i], zi = z[i];
    double ax = 0.0, ay = 0.0, az = 0.0;
#pragma omp simd reduction(+ : ax, ay, az)
    for (int j = 0; j < n; j++) {
        const double dx = x[j] - xi, dy = y[j] - yi, dz = z[j] - zi;
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
    const int n4 = n / 4 * 4;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n4; i += 4) {
        double xi[4], yi[4], zi[4];
        for (int r = 0; r < 4; r++) {
            xi[r] = x[i + r];
            yi[r] = y[i + r];
            zi[r] = z[i + r];
        }
        double ax0 = 0, ay0 = 0, az0 = 0, ax1 = 0, ay1 = 0, az1 = 0;
        double ax2 = 0, ay2 = 0, az2 = 0, ax3 = 0, ay3 = 0, az3 = 0;
#pragma omp simd reduction(+ : ax0, ay0, az0, ax1, ay1, az1, ax2, ay2, az2, ax3, ay3, az3)
        for (int j = 0; j < n; j++) {
            const double xj = x[j], yj = y[j], zj = z[j], g = gm[j];
#define BODY(r, AX, AY, AZ)                                                    \
    {                                                                          \
        const double dx = xj - xi[r], dy = yj - yi[r], dz = zj - zi[r];        \
        const double r2 = dx * dx + dy * dy + dz * dz + eps2;                  \
        const double s = g / (r2 * sqrt(r2));                                  \
        AX += s * dx;                                                          \
        AY += s * dy;                                                          \
        AZ += s * dz;                                                          \
    }
            BODY(0, ax0, ay0, az0)
            BODY(1, ax1, ay1, az1)
            BODY(2, ax2, ay2, az2)
            BODY(3, ax3, ay3, az3)
#undef BODY
        }
        const double out[12] = {ax0, ay0, az0, ax1, ay1, az1, ax2, ay2, az2, ax3, ay3, az3};
        for (int q = 0; q < 12; q++)
            acc[3 * i + q] = out[q];
    }
    for (int i = n4; i < n; i++)
        one_body(i, n, x, y, z, gm, eps2, acc);
    free(x);
}
