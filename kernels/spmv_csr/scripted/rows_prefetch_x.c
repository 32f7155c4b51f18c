/* Scripted variant "rows_prefetch_x": the SIMD-gather row loop, plus a software prefetch
 * of the x entries the next row will gather (its column indices are already known), so
 * the irregular reads of x overlap the current row's work; rows in parallel. */
void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    (void)n;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        const int start = row_ptr[i], end = row_ptr[i + 1];
        if (i + 1 < m) {
            const int next_end = row_ptr[i + 2];
            for (int q = end; q < next_end; q++)
                __builtin_prefetch(x + col_idx[q], 0, 1);
        }
        const int *restrict ci = col_idx;
        const double *restrict v = val;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int p = start; p < end; p++)
            sum += v[p] * x[ci[p]];
        y[i] = sum;
    }
}
