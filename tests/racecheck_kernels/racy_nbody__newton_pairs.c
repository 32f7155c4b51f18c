/* Newton's third law: each pair once, the force added to both bodies from one thread. */
#include <math.h>

void compute_accelerations(int n, const double *pos, const double *mass, double G,
                           double eps, double *acc)
{
    for (int i = 0; i < 3 * n; i++)
        acc[i] = 0.0;
#pragma omp parallel for schedule(dynamic, 4)
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double dx = pos[3 * j] - pos[3 * i];
            double dy = pos[3 * j + 1] - pos[3 * i + 1];
            double dz = pos[3 * j + 2] - pos[3 * i + 2];
            double r2 = dx * dx + dy * dy + dz * dz + eps * eps;
            double f = G / (r2 * sqrt(r2));
            acc[3 * i] += f * mass[j] * dx;
            acc[3 * i + 1] += f * mass[j] * dy;
            acc[3 * i + 2] += f * mass[j] * dz;
            acc[3 * j] -= f * mass[i] * dx;
            acc[3 * j + 1] -= f * mass[i] * dy;
            acc[3 * j + 2] -= f * mass[i] * dz;
        }
}
