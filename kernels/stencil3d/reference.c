/* Reference stencil3d, built by the trusted side: the plain loop nest, written
 * independently of the baseline the agents edit (same semantics, see kernel.yaml). */

void kernel_stencil3d(int nx, int ny, int nz, double c0, double c1,
                      const double *in, double *out)
{
    const long px = nx + 2, py = ny + 2;
    for (long z = 1; z <= nz; z++) {
        for (long y = 1; y <= ny; y++) {
            for (long x = 1; x <= nx; x++) {
                const long c = (z * py + y) * px + x;
                const double faces = in[c - 1] + in[c + 1] + in[c - px] + in[c + px]
                                   + in[c - px * py] + in[c + px * py];
                out[c] = c0 * in[c] + c1 * faces;
            }
        }
    }
}
