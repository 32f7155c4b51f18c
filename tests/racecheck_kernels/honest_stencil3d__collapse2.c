void kernel_stencil3d(int nx, int ny, int nz, double c0, double c1,
                      const double *in, double *out)
{
    const long sx = 1, sy = nx + 2, sz = (long)(nx + 2) * (ny + 2);
#pragma omp parallel for collapse(2) schedule(static)
    for (int z = 1; z <= nz; z++)
        for (int y = 1; y <= ny; y++)
#pragma omp simd
            for (int x = 1; x <= nx; x++) {
                const long c = z * sz + y * sy + x * sx;
                out[c] = c0 * in[c] + c1 * (in[c - sx] + in[c + sx] + in[c - sy] + in[c + sy]
                                            + in[c - sz] + in[c + sz]);
            }
}
