/* Scripted variant "soa_simd": positions are copied once per call into separate x, y, z
 * arrays (structure of arrays, 64-byte aligned) with G*mass beside them, so the inner
 * loop reads four unit-stride streams and '#pragma omp simd' vectorises it (vector sqrt
 * and division, exact); bodies in parallel. */
#include <math.h>
#include <stdlib.h>

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
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
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
    free(x);
}
