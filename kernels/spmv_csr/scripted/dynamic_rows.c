/* Scripted variant "dynamic_rows": rows handed out in chunks of 256 with a dynamic
 * schedule, so rows of uneven length (or a thread slowed by another process) do not leave
 * a thread idle; the row bounds are read once into locals. */
void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    (void)n;
#pragma omp parallel for schedule(dynamic, 256)
    for (int i = 0; i < m; i++) {
        const int start = row_ptr[i], end = row_ptr[i + 1];
        double sum = 0.0;
        for (int p = start; p < end; p++)
            sum += val[p] * x[col_idx[p]];
        y[i] = sum;
    }
}
