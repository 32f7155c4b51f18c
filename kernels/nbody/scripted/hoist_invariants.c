/* Scripted variant "hoist_invariants": body i's position, eps*eps and G*mass[j] leave the
 * inner loop (G*mass is computed once per call into a scratch array), and the three
 * components share one factor G*m_j/r^3; bodies in parallel. */
#include <math.h>
#include <stdlib.h>

void compute_accelerations(int n, const double *pos, const double *mass,
                           double G, double eps, double *acc)
{
    if (n <= 0)
        return;
    double *gm = malloc(sizeof(double) * (size_t)n);
    if (!gm)
        return;
    for (int j = 0; j < n; j++)
        gm[j] = G * mass[j];
    const double eps2 = eps * eps;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const double xi = pos[3 * i], yi = pos[3 * i + 1], zi = pos[3 * i + 2];
        double ax = 0.0, ay = 0.0, az = 0.0;
        for (int j = 0; j < n; j++) {
            const double dx = pos[3 * j] - xi, dy = pos[3 * j + 1] - yi, dz = pos[3 * j + 2] - zi;
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
    free(gm);
}
