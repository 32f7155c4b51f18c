/* Scripted variant "unroll_x4": the x loop unrolled by 4 so four output points are in
 * flight per step; a remainder loop finishes rows whose length is not a multiple of 4.
 * Rows in parallel over OpenMP threads. */
void kernel_stencil3d(int nx, int ny, int nz, double c0, double c1,
                      const double *in, double *out)
{
    const long sy = nx + 2, sz = (long)(nx + 2) * (ny + 2);
#pragma omp parallel for collapse(2) schedule(static)
    for (int z = 1; z <= nz; z++)
        for (int y = 1; y <= ny; y++) {
            const long c = z * sz + y * sy;
            const double *restrict p = in + c;
            double *restrict o = out + c;
            int x = 1;
            for (; x + 3 <= nx; x += 4) {
                for (int u = 0; u < 4; u++) {
                    const int q = x + u;
                    o[q] = c0 * p[q] + c1 * (p[q - 1] + p[q + 1] + p[q - sy] + p[q + sy]
                                             + p[q - sz] + p[q + sz]);
                }
            }
            for (; x <= nx; x++)
                o[x] = c0 * p[x] + c1 * (p[x - 1] + p[x + 1] + p[x - sy] + p[x + sy]
                                         + p[x - sz] + p[x + sz]);
        }
}
