/* Baseline stencil3d: the plain loop nest the agents start from.
 * One Jacobi sweep of the 3-D 7-point stencil on a grid with a one-point halo:
 * out = c0*in + c1*(sum of the 6 face neighbours) on every interior point (see kernel.yaml). */

void kernel_stencil3d(int nx, int ny, int nz, double c0, double c1,
                      const double *in, double *out)
{
    const long sx = 1, sy = nx + 2, sz = (long)(nx + 2) * (ny + 2);
    for (int z = 1; z <= nz; z++)
        for (int y = 1; y <= ny; y++)
            for (int x = 1; x <= nx; x++) {
                const long c = z * sz + y * sy + x * sx;
                out[c] = c0 * in[c]
                       + c1 * (in[c - sx] + in[c + sx] + in[c - sy] + in[c + sy]
                               + in[c - sz] + in[c + sz]);
            }
}
