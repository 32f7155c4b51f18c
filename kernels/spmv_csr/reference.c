/* Reference spmv_csr, built by the trusted side: the textbook CSR product, written apart
 * from the baseline the agents edit (same semantics, see kernel.yaml). */

void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    (void)n;
    for (long i = 0; i < m; i++) {
        const long start = row_ptr[i], end = row_ptr[i + 1];
        double acc = 0.0;
        for (long p = start; p < end; p++)
            acc += val[p] * x[col_idx[p]];
        y[i] = acc;
    }
}
