/* Scripted variant "omp_bodies": the user's loop with the bodies i shared among the
 * OpenMP threads (each i's sum is independent), static schedule. */
#include <math.h>

void compute_accelerations(int n, const double *pos, const double *mass,
                           double G, double eps, double *acc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        double ax = 0.0, ay = 0.0, az = 0.0;
        for (int j = 0; j < n; j++) {
            double dx = pos[3*j]   - pos[3*i];
            double dy = pos[3*j+1] - pos[3*i+1];
            double dz = pos[3*j+2] - pos[3*i+2];
            double r2 = dx*dx + dy*dy + dz*dz + eps*eps;
            double inv_r3 = 1.0 / (r2 * sqrt(r2));
            ax += G * mass[j] * dx * inv_r3;
            ay += G * mass[j] * dy * inv_r3;
            az += G * mass[j] * dz * inv_r3;
        }
        acc[3*i]   = ax;
        acc[3*i+1] = ay;
        acc[3*i+2] = az;
    }
}
