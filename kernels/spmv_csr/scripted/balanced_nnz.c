/* Scripted variant "balanced_nnz": each OpenMP thread takes one contiguous range of rows
 * holding an equal share of the non-zeros (found by binary search in row_ptr), so the
 * work is balanced however the row lengths vary and every thread streams val and col_idx
 * in one pass; SIMD reductions per row. */
#include <omp.h>

static int first_row_at(const int *row_ptr, int m, long target)
{
    int lo = 0, hi = m; /* smallest row i with row_ptr[i] >= target */
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (row_ptr[mid] < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void kernel_spmv_csr(int m, int n, const int *row_ptr, const int *col_idx,
                     const double *val, const double *x, double *y)
{
    (void)n;
    const long nnz = m > 0 ? row_ptr[m] - row_ptr[0] : 0;
#pragma omp parallel
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int r0 = t == 0 ? 0 : first_row_at(row_ptr, m, row_ptr[0] + nnz * t / nt);
        const int r1 = t == nt - 1 ? m : first_row_at(row_ptr, m, row_ptr[0] + nnz * (t + 1) / nt);
        for (int i = r0; i < r1; i++) {
            const int start = row_ptr[i], end = row_ptr[i + 1];
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (int p = start; p < end; p++)
                sum += val[p] * x[col_idx[p]];
            y[i] = sum;
        }
    }
}
