/* Baseline spmv_csr: the plain CSR loop the agents start from.
 * y := A*x, A is m x n in compressed sparse row form (see kernel.yaml). */

void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    for (int i = 0; i < m; i++) {
        double sum = 0.0;
        for (int p = row_ptr[i]; p < row_ptr[i + 1]; p++)
            sum += val[p] * x[col_idx[p]];
        y[i] = sum;
    }
}
