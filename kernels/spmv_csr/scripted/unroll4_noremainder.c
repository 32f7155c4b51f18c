/* Scripted variant "unroll4": four independent partial sums per row so four gathers and
 * multiply-adds are in flight; rows are taken to hold a multiple of 4 entries;
 * rows in parallel. */
void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    (void)n;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        const int start = row_ptr[i], end = row_ptr[i + 1];
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        int p = start;
        for (; p + 3 < end; p += 4) {
            s0 += val[p] * x[col_idx[p]];
            s1 += val[p + 1] * x[col_idx[p + 1]];
            s2 += val[p + 2] * x[col_idx[p + 2]];
            s3 += val[p + 3] * x[col_idx[p + 3]];
        }
        y[i] = (s0 + s1) + (s2 + s3);
    }
}
