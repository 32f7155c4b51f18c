/* Every body's sum in its own thread (the racy Newton pairs, done right: twice the work). */
#include <math.h>

void compute_accelerations(int n, const double *pos, const double *mass, double G,
                           double eps, double *acc)
{
#pragma omp parallel for schedule(dynamic, 8)
    for (int i = 0; i < n; i++) {
        double ax = 0.0, ay = 0.0, az = 0.0;
        for (int j = 0; j < n; j++) {
            double dx = pos[3 * j] - pos[3 * i];
            double dy = pos[3 * j + 1] - pos[3 * i + 1];
            double dz = pos[3 * j + 2] - pos[3 * i + 2];
            double r2 = dx * dx + dy * dy + dz * dz + eps * eps;
            double f = G * mass[j] / (r2 * sqrt(r2));
            ax += f * dx;
            ay += f * dy;
            az += f * dz;
        }
        acc[3 * i] = ax;
        acc[3 * i + 1] = ay;
        acc[3 * i + 2] = az;
    }
}
