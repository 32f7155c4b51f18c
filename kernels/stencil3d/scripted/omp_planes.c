/* Scripted variant "omp_planes": the rows of the grid (z, y) are shared among the
 * OpenMP threads, static schedule; restrict-qualified row pointers let the compiler
 * vectorise the unit-stride x loop without run-time alias checks. */
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
            for (int x = 1; x <= nx; x++)
                o[x] = c0 * p[x] + c1 * (p[x - 1] + p[x + 1] + p[x - sy] + p[x + sy]
                                         + p[x - sz] + p[x + sz]);
        }
}
