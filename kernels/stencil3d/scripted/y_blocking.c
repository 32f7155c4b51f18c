/* Scripted variant "y_blocking": the y dimension is cut into blocks of 24 rows and each
 * block marches through all z planes, so the three planes the stencil touches (24 rows
 * each) stay in L2 and every input row is read from memory once. Blocks are shared among
 * the OpenMP threads. */
#define BY 24

void kernel_stencil3d(int nx, int ny, int nz, double c0, double c1,
                      const double *in, double *out)
{
    const long sy = nx + 2, sz = (long)(nx + 2) * (ny + 2);
    const int nblocks = (ny + BY - 1) / BY;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nblocks; b++) {
        const int y0 = 1 + b * BY;
        const int y1 = y0 + BY - 1 < ny ? y0 + BY - 1 : ny;
        for (int z = 1; z <= nz; z++)
            for (int y = y0; y <= y1; y++) {
                const long c = z * sz + y * sy;
                const double *restrict p = in + c;
                double *restrict o = out + c;
#pragma omp simd
                for (int x = 1; x <= nx; x++)
                    o[x] = c0 * p[x] + c1 * ((p[x - 1] + p[x + 1]) + (p[x - sy] + p[x + sy])
                                             + (p[x - sz] + p[x + sz]));
            }
    }
}
