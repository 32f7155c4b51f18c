/* Scripted variant "simd_gather": each row's sum is an OpenMP SIMD reduction, so with
 * AVX-512 the compiler gathers eight x[col_idx[p]] per instruction and keeps vector
 * partial sums; rows in parallel. */
void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    (void)n;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        const int start = row_ptr[i], end = row_ptr[i + 1];
        const int *restrict ci = col_idx;
        const double *restrict v = val;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int p = start; p < end; p++)
            sum += v[p] * x[ci[p]];
        y[i] = sum;
    }
}
