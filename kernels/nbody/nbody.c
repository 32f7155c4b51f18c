#include <math.h>

/*
 * Direct-summation gravity for our cluster simulation code.
 * Computes the acceleration of every body due to all the others,
 * with Plummer softening eps (so the i == j term contributes nothing).
 * pos: x0 y0 z0 x1 y1 z1 ...   acc: same layout.
 */
void compute_accelerations(int n, const double *pos, const double *mass,
                           double G, double eps, double *acc)
{
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
