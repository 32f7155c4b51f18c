/* Scripted variant "simd_rows": seven row pointers (centre, west/east share one, north,
 * south, below, above) and an explicit '#pragma omp simd' on the x loop; planes in
 * parallel over OpenMP threads. */
void kernel_stencil3d(int nx, int ny, int nz, double c0, double c1,
                      const double *in, double *out)
{
    const long sy = nx + 2, sz = (long)(nx + 2) * (ny + 2);
#pragma omp parallel for schedule(static)
    for (int z = 1; z <= nz; z++)
        for (int y = 1; y <= ny; y++) {
            const long c = z * sz + y * sy;
            const double *restrict cc = in + c;
            const double *restrict n = in + c - sy;
            const double *restrict s = in + c + sy;
            const double *restrict b = in + c - sz;
            const double *restrict a = in + c + sz
            double *restrict o = out + c;
#pragma omp simd
            for (int x = 1; x <= nx; x++)
                o[x] = c0 * cc[x] + c1 * ((cc[x - 1] + cc[x + 1]) + (n[x] + s[x]) + (b[x] + a[x]));
        }
}
