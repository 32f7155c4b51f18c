/* Scripted variant "omp_rows": the rows are shared among the OpenMP threads with a static
 * schedule (every row's sum is independent). */
void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    (void)n;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double sum = 0.0;
        for (int p = row_ptr[i]; p < row_ptr[i + 1]; p++)
            sum += val[p] * x[col_idx[p]];
        y[i] = sum;
    }
}
